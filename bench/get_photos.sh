#!/usr/bin/env bash
# Fetch large real wallpaper photos for the decode benchmark, OUTSIDE the repository.
#
#   bench/get_photos.sh DIR        (e.g. bench/get_photos.sh .bench-data)
#
# Downloads the Debian packages gnome-backgrounds, plasma-workspace-wallpapers and
# mate-backgrounds with `apt-get download` (no root needed for the download itself; run
# `apt-get update` first if apt does not know them), extracts them into DIR/x and collects into
# DIR/photos:
#   * every JPEG of >= 8 megapixels (the packages ship only ~8 of them),
#   * every PNG of >= 8 megapixels,
#   * and, because there are too few large JPEGs, a JPEG re-encoded at quality 90 with Pillow from
#     each of those large PNGs (named *.from-png.jpg), so the JPEG benchmark has ~20 photos.
# Idempotent: existing downloads, extractions and outputs are reused.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir=$1
mkdir -p "$dir/photos" "$dir/x"
dir=$(cd "$dir" && pwd)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-}
if [[ -z $python ]]; then
    if [[ -x $here/../.venv/bin/python ]]; then python=$here/../.venv/bin/python; else python=python3; fi
fi

packages=(gnome-backgrounds plasma-workspace-wallpapers mate-backgrounds)
cd "$dir"
for pkg in "${packages[@]}"; do
    if ! compgen -G "${pkg}_*.deb" >/dev/null; then
        apt-get download "$pkg"
    fi
    deb=$(compgen -G "${pkg}_*.deb" | head -n 1)
    stamp="x/.extracted-${pkg}"
    if [[ ! -e $stamp ]]; then
        dpkg -x "$deb" x
        touch "$stamp"
    fi
done

"$python" - "$dir/x" "$dir/photos" <<'PY'
import shutil
import sys
from pathlib import Path

from PIL import Image

Image.MAX_IMAGE_PIXELS = None
src, out = Path(sys.argv[1]), Path(sys.argv[2])
MIN_PIXELS = 8_000_000
jpegs = pngs = made = 0
for p in sorted(src.rglob("*")):
    suffix = p.suffix.lower()
    if suffix not in {".jpg", ".jpeg", ".png"} or not p.is_file() or p.is_symlink():
        continue
    try:
        with Image.open(p) as im:
            w, h = im.size
    except OSError:
        continue
    if w * h < MIN_PIXELS:
        continue
    # unique, readable name: <theme>-<dir>-<file>
    name = "-".join(p.relative_to(src).parts[-4:]).replace("-contents-", "-")
    dest = out / name
    if not dest.exists():
        shutil.copyfile(p, dest)
    if suffix == ".png":
        pngs += 1
        jpg = out / (Path(name).stem + ".from-png.jpg")
        if not jpg.exists():
            with Image.open(p) as im:
                im.convert("RGB").save(jpg, "JPEG", quality=90)
        made += 1
    else:
        jpegs += 1
print(f"{out}: {jpegs} JPEGs >= 8 MP, {pngs} PNGs >= 8 MP, {made} JPEGs re-encoded from PNG")
PY
