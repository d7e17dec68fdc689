"""Text search: the MiniLM encoder against sentence-transformers, concepts, scoring, storage of
class probabilities, Collection.search_text and `lookalike search --text`."""

from __future__ import annotations

import gzip
import importlib.util
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lookalike
from lookalike.features.registry import CLASSES, DEEP, UnknownFeature
from lookalike.index.classes import ClassIndex, dense, pack, top_k, unpack

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def text_model():
    from lookalike.text.scoring import default_text_model

    model = default_text_model()
    model.prepare()
    return model


# -- encoder ------------------------------------------------------------------------------------


def test_encoder_matches_sentence_transformers(text_model) -> None:
    """Golden file from scripts/make_text_golden.py (sentence-transformers 6.2, torch 2.13)."""
    golden = np.load(DATA / "golden_minilm.npz")
    sentences = [str(s) for s in golden["sentences"]]
    ids, _ = text_model.encoder.tokenize(sentences)
    np.testing.assert_array_equal(ids, golden["input_ids"])  # same tokens, same truncation
    embeddings = text_model.encoder.encode(sentences)
    assert embeddings.shape == (len(sentences), 384) and embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, golden["embeddings"], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    one = text_model.encoder.encode([sentences[1]])  # batch of one pads nothing
    np.testing.assert_allclose(one[0], golden["embeddings"][1], atol=1e-5)


def test_read_safetensors_by_hand(tmp_path: Path) -> None:
    from lookalike.text.encoder import read_safetensors

    a = np.arange(6, dtype="<f4").reshape(2, 3)
    b = np.array([7, -8], dtype="<i8")
    header = {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "b": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]},
    }
    text = json.dumps(header).encode()
    path = tmp_path / "t.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + a.tobytes() + b.tobytes())
    out = read_safetensors(path)
    np.testing.assert_array_equal(out["a"], a)
    np.testing.assert_array_equal(out["b"], b)
    assert set(out) == {"a", "b"}


def test_no_torch_at_run_time(text_model) -> None:
    assert importlib.util.find_spec("torch") is None, "torch must not be installed in .venv"
    code = (
        "import sys, lookalike.text.scoring as s; s.default_text_model().interpret('cat'); "
        "bad = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules]"
        "; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- concepts -----------------------------------------------------------------------------------


def test_concepts_file(text_model) -> None:
    concepts = text_model.concepts
    assert concepts.classes == sorted(concepts.classes) and len(concepts.classes) == 1000
    assert "WordNet" in concepts.source and "Princeton" in concepts.licence
    dog = next(c for c in concepts.find("dog") if len(c.classes) > 100)  # every breed a dog
    assert dog.wnid == "n02084071" and len(dog.classes) == 118
    assert "puppy" in dog.aliases
    tabby = concepts.by_wnid("n02123045")
    assert tabby.is_class and list(tabby.classes) == [281]
    cat = concepts.by_wnid("n02121620")
    assert set(tabby.classes) <= set(cat.classes)
    for c in concepts.concepts:  # an ancestor covers at least what its kinds cover
        for parent in c.parents:
            assert set(c.classes) <= set(concepts.concepts[parent].classes)
    with gzip.open(concepts.path) as fh:
        assert len(fh.read()) < 2_000_000


# -- reading queries ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "wnid"),
    [
        ("cat", "n02121620"),
        ("kitty", "n02121808"),  # synonym: domestic cat
        ("puppy", "n02084071"),  # synonym: dog
        ("tabby cat", "n02123045"),
        ("a photo of a monkey", "n02484322"),
        ("a cup of espresso", "n07920052"),
        ("squirrel", "n02355227"),
    ],
)
def test_interpret_names_the_concept(text_model, text: str, wnid: str) -> None:
    query = text_model.interpret(text)
    assert query.matched and query.warning is None
    assert wnid in [m.concept.wnid for m in query.matched_concepts]
    weights = query.class_weights
    assert weights.shape == (1, 1000) and weights.max() == 1.0


def test_unmatched_query_is_reported(text_model) -> None:
    for text in ("quantum entanglement", "democracy"):
        query = text_model.interpret(text)
        assert not query.matched and query.matched_concepts == []
        assert "no concept" in query.warning
        assert query.class_weights.max() <= 0.05  # low scores whatever the image


def test_multi_concept_query_needs_both(text_model) -> None:
    query = text_model.interpret("dog on a beach")
    assert [p.text for p in query.parts] == ["dog", "beach"]
    names = {m.name for m in query.matched_concepts}
    assert {"dog", "seashore"} <= names
    dog, beach = (np.flatnonzero(p.weights)[0] for p in query.parts)
    probabilities = np.zeros((3, 1000), np.float32)
    probabilities[0, dog] = 0.9  # only a dog
    probabilities[1, [dog, beach]] = 0.45  # a dog on a beach
    probabilities[2, beach] = 0.9  # only a beach
    scores = query.scores(probabilities)
    assert scores.argmax() == 1 and scores[1] > 2 * max(scores[0], scores[2])


def test_unmatched_part_is_ignored_with_a_warning(text_model) -> None:
    query = text_model.interpret("dog and quantum entanglement")
    assert [p.text for p in query.parts] == ["dog"]
    assert "quantum entanglement" in query.warning and "ignored" in query.warning


def test_empty_text_is_refused(text_model) -> None:
    with pytest.raises(ValueError, match="empty"):
        text_model.interpret("   ")


# -- stored class probabilities -----------------------------------------------------------------


def test_pack_keeps_the_top_classes() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 1000)).astype(np.float32) * 3
    from lookalike.index.classes import softmax

    p = softmax(logits)
    packed = pack(p)
    assert packed.shape == (5, CLASSES.width) and packed.dtype == np.uint8
    classes, values = unpack(packed)
    for row in range(5):
        best = np.argsort(-p[row])[:32]
        assert classes[row].tolist() == best.tolist()
        np.testing.assert_allclose(values[row], p[row, best], rtol=1e-3, atol=1e-7)
    assert np.all(np.diff(values, axis=1) <= 0)
    np.testing.assert_allclose(dense(packed)[p > 0.05], p[p > 0.05], rtol=1e-3)


def test_class_index_scores_like_dense(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.full(1000, 0.05), size=50).astype(np.float32)
    packed = pack(p)
    index = ClassIndex()
    ids = np.arange(100, 150, dtype=np.int64)
    index.add(ids, packed)
    w = (rng.random((2, 1000)) < 0.1).astype(np.float32)
    expected = w @ dense(packed).T
    np.testing.assert_allclose(index.scores(w), expected, atol=1e-5)
    np.testing.assert_allclose(index.scores(w, ids[[3, 1]]), expected[:, [3, 1]], atol=1e-5)
    index.save(tmp_path / "c.npz")
    loaded = ClassIndex.load(tmp_path / "c.npz")
    np.testing.assert_array_equal(loaded.ids(), ids)
    assert loaded.remove(ids[:10]) == 10 and len(loaded) == 40
    np.testing.assert_allclose(loaded.scores(w), expected[:, 10:], atol=1e-5)
    scores, found = loaded.search(packed[20:21], 3)  # an image finds itself first
    assert found[0, 0] == ids[20]
    scores, found = loaded.search(packed[20:21], 3, ids=ids[30:32])
    assert set(found[0, :2].tolist()) == set(ids[30:32].tolist()) and found[0, 2] == -1
    s, f = top_k(np.array([[0.5, 0.9, 0.5]], np.float32), np.array([7, 8, 9]), 5)
    assert f[0].tolist() == [8, 7, 9, -1, -1]


def test_text_query_over_100k_images(text_model) -> None:
    """At 100,000 images the packed class index ranks text queries as a dense product would
    (its speed, p50 about 10 ms, is measured by ``python -m bench text``, not asserted here)."""
    from bench.text import synthetic_classes

    n = 100_000
    packed = synthetic_classes(n, np.random.default_rng(0))
    index = ClassIndex()
    ids = np.arange(n, dtype=np.int64) + 7
    index.add(ids, packed)
    full = dense(packed)
    for text in ("tabby cat", "a cup of espresso", "dog on a beach"):
        query = text_model.interpret(text)
        scores = query.combine(index.scores(query.class_weights))
        expected = query.combine(query.class_weights @ full.T)
        np.testing.assert_allclose(scores, expected, atol=1e-4)
        top, found = top_k(scores[None], ids, 10)
        order = np.argsort(-expected, kind="stable")[:10]
        np.testing.assert_allclose(top[0], expected[order], atol=1e-4)
        assert (np.diff(top[0]) <= 0).all()


# -- the collection -----------------------------------------------------------------------------


def test_search_text_finds_the_sample_photos(sample_index, text_model) -> None:
    for text, name in (
        ("cat", "chelsea"),
        ("kitty", "chelsea"),
        ("tabby cat", "chelsea"),
        ("a cup of espresso", "coffee"),
    ):
        hits = sample_index.search_text(text, k=3)
        assert Path(hits[0].path).stem == name, (text, hits)
        assert hits.matched and hits.warning is None
        assert 0.1 < hits[0].score <= 1.0 and hits[0].score > 5 * hits[1].score
    same = sample_index.search(text="a cup of espresso", k=3)
    alone = sample_index.search_text("a cup of espresso")
    assert [m.path for m in same] == [m.path for m in alone][:3]


def test_search_text_reports_unmatched_text(sample_index) -> None:
    hits = sample_index.search_text("quantum entanglement", k=5)
    assert not hits.matched and "no concept" in hits.warning
    assert len(hits) == 5 and all(m.score <= 0.05 for m in hits)
    body = hits.as_dict()
    assert body["matched"] is False and body["concepts"] == [] and len(body["results"]) == 5


def test_text_and_image_together(sample_index, sample_dir: Path) -> None:
    coffee = sample_dir / "coffee.jpg"
    by_image = sample_index.search_text("cat", k=2, image=coffee, weight=0.0)
    assert Path(by_image[0].path).stem == "coffee" and by_image[0].score == pytest.approx(1, 1e-4)
    by_text = sample_index.search_text("cat", k=2, image=coffee, weight=1.0)
    assert Path(by_text[0].path).stem == "chelsea"
    night = sample_index.search(coffee, text="at night", k=2)  # text names nothing: image only
    assert Path(night[0].path).stem == "coffee" and "ignored" in night.warning
    with pytest.raises(ValueError, match="weight"):
        sample_index.search_text("cat", image=coffee, weight=2.0)


def test_search_text_in_a_folder(tmp_path: Path, sample_dir: Path) -> None:
    import shutil

    for sub, names in (("a", ("chelsea", "coffee")), ("b", ("astronaut", "rocket"))):
        (tmp_path / sub).mkdir()
        for n in names:
            shutil.copy(sample_dir / f"{n}.jpg", tmp_path / sub / f"{n}.jpg")
    with lookalike.open(tmp_path / "index") as col:
        col.add([tmp_path / "a", tmp_path / "b"], workers=1)
        hits = col.search_text("cat", k=5, folder=tmp_path / "b")
        assert {Path(m.path).parent.name for m in hits} == {"b"} and len(hits) == 2


def test_class_probabilities_stored_with_deep_and_backfilled(tmp_path: Path, sample_dir) -> None:
    import shutil

    folder = tmp_path / "photos"
    folder.mkdir()
    for n in ("chelsea", "coffee", "rocket"):
        shutil.copy(sample_dir / f"{n}.jpg", folder / f"{n}.jpg")
    with lookalike.open(tmp_path / "index") as col:
        col.add([folder], workers=1)
        assert col.features == ["deep"]  # the class probabilities ride along, unlisted
        assert len(col.catalog.vector_ids(CLASSES.name)) == 3
        assert col.info()["text_search"]["images"] == 3 and col.verify() == []
        deep_before = col.catalog.vectors(DEEP.name, DEEP.width)[1]
        # a collection indexed before text search existed: no class probabilities
        with col.catalog.transaction():
            col.catalog.forget_feature(CLASSES.name)
    with lookalike.open(tmp_path / "index") as col:
        hits = col.search_text("cat")
        assert len(hits) == 0 and "3 images have no class probabilities" in hits.warning
        report = col.add([folder], workers=1)  # the next index run adds them
        assert report.backfilled == 3 and report.embedded == 0
        assert col.verify() == []
        np.testing.assert_array_equal(col.catalog.vectors(DEEP.name, DEEP.width)[1], deep_before)
        hits = col.search_text("cat")
        assert Path(hits[0].path).stem == "chelsea" and hits.warning is None
        col.add([folder], features="phash", workers=1)  # no deep: no class probabilities
        assert col.catalog.vector_ids(CLASSES.name).size == 0
        with pytest.raises(UnknownFeature, match="deep"):
            col.search_text("cat")


# -- command line -------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lookalike.cli", *args], capture_output=True, text=True
    )


@pytest.mark.integration
def test_cli_search_text(sample_index) -> None:
    db = str(sample_index.folder)
    out = _cli("search", "--db", db, "--text", "a cup of espresso", "--json", "-k", "2")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["query"] == "a cup of espresso" and body["matched"] is True
    assert body["concepts"][0]["concept"] == "espresso" and body["warning"] is None
    assert Path(body["results"][0]["path"]).stem == "coffee" and len(body["results"]) == 2
    out = _cli("search", "--db", db, "--text", "quantum entanglement", "-k", "1")
    assert out.returncode == 0 and "no concept" in out.stderr and "(no concept)" in out.stdout
    out = _cli("search", "--db", db, "--text", "tabby cat", "--text", "kitty", "-f", "-k", "1")
    assert [Path(p).stem for p in out.stdout.split()] == ["chelsea", "chelsea"]
    assert _cli("search", "--db", db).returncode == 2
    assert _cli("search", "--db", db, "--image", "x.jpg").returncode == 2
    assert _cli("search", "--db", db, "--text", "cat", "--weight", "3").returncode == 2


# -- bring your own CLIP ------------------------------------------------------------------------

TINY_CLIP = DATA / "tiny_clip"  # random weights from scripts/make_tiny_clip.py: plumbing only


def test_clip_onnx_encoders() -> None:
    from lookalike.text.clip import ClipModelError, ClipOnnx, parse_model

    clip = ClipOnnx(TINY_CLIP)
    assert clip.dim == 16 and clip.input_shape == (32, 32, 3)
    text = clip.encode_text(["a red sports car", "cat", "unknown words here"])
    images = clip.encode_images(np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), "u1"))
    for x in (text, images):  # one shared space, unit vectors whatever the graphs give
        assert x.shape[1] == 16 and x.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert parse_model(f"clip-onnx:{TINY_CLIP}") == TINY_CLIP.absolute()
    with pytest.raises(ClipModelError, match="clip-onnx"):
        parse_model("openai-clip")
    with pytest.raises(ClipModelError, match="lacks"):
        ClipOnnx(DATA)


def test_bring_your_own_clip(tmp_path: Path, sample_dir: Path) -> None:
    import shutil

    from lookalike.collection import MIN_SIDE
    from lookalike.images import load_image
    from lookalike.text.clip import ClipModelError, ClipOnnx

    folder = tmp_path / "photos"
    folder.mkdir()
    names = ("chelsea", "coffee", "rocket", "astronaut")
    for n in names:
        shutil.copy(sample_dir / f"{n}.jpg", folder / f"{n}.jpg")
    model = f"clip-onnx:{TINY_CLIP}"
    clip = ClipOnnx(TINY_CLIP)
    with lookalike.open(tmp_path / "index") as col:
        col.add([folder], workers=1, model=model)
        assert col.info()["text_search"]["model"] == f"clip-onnx:{TINY_CLIP.absolute()}"
        assert col.verify() == []
        ids, stored = col.catalog.vectors("clip", 16)
        expected = {}
        for n in names:  # what indexing stored is the model's embedding of the decoded file
            image = load_image(str(folder / f"{n}.jpg"), min_side=MIN_SIDE).image
            expected[str(folder / f"{n}.jpg")] = clip.encode_images(clip.preparer()(image)[None])
        by_path = {m.path: m for m in col.search_text("cat", k=4, model="concepts")}
        for path, vector in expected.items():
            row = stored[list(ids).index(by_path[path].content_id)]
            np.testing.assert_allclose(row, vector[0], atol=1e-5)
        # text search ranks by cosine in CLIP's space
        text = clip.encode_text(["a red sports car"])[0]
        hits = col.search_text("a red sports car", k=4)
        assert hits.model.startswith("clip-onnx:") and hits.warning is None
        cosine = {p: float(v[0] @ text) for p, v in expected.items()}
        assert [m.path for m in hits] == sorted(cosine, key=cosine.get, reverse=True)
        np.testing.assert_allclose(
            [m.score for m in hits], sorted(cosine.values())[::-1], atol=1e-5
        )
        # an image mixed in, rclip style; weight 0 is the image alone
        coffee = folder / "coffee.jpg"
        alone = col.search_text("a red sports car", k=1, image=coffee, weight=0.0)
        assert alone[0].path == str(coffee) and alone[0].score == pytest.approx(1.0, abs=1e-5)
        # the built-in concepts still answer on request
        assert Path(col.search_text("cat", k=1, model="concepts")[0].path).stem == "chelsea"
    # another CLIP replaces the embeddings of the first
    other = tmp_path / "other_clip"
    shutil.copytree(TINY_CLIP, other)
    config = {"image_size": 32, "context_length": 16, "mean": [0.5] * 3, "std": [0.5] * 3}
    (other / "clip.json").write_text(json.dumps(config))
    (bad := tmp_path / "bad_clip").mkdir()
    for name in ("image.onnx", "text.onnx", "tokenizer.json"):
        shutil.copy(TINY_CLIP / name, bad / name)
    (bad / "clip.json").write_text(json.dumps({"image_size": 24}))  # the graph wants 32
    with lookalike.open(tmp_path / "index") as col, pytest.raises(ClipModelError, match="run"):
        col.add([folder], workers=1, model=f"clip-onnx:{bad}")
    with lookalike.open(tmp_path / "index") as col:
        report = col.add([folder], workers=1, model=f"clip-onnx:{other}")
        assert report.backfilled == 4 and col.verify() == []
        assert col.catalog.vectors("clip", 16)[1].shape == (4, 16)


@pytest.mark.integration
def test_cli_bring_your_own_clip(tmp_path: Path, sample_dir: Path) -> None:
    db = str(tmp_path / "index")
    out = _cli("index", str(sample_dir / "coffee.jpg"), "--db", db, "--model", "clip-onnx:/nope")
    assert out.returncode == 1 and "lacks" in out.stderr
    out = _cli("index", str(sample_dir / "coffee.jpg"), "--db", db, "-q",
               "--model", f"clip-onnx:{TINY_CLIP}")  # fmt: skip
    assert out.returncode == 0, out.stderr
    out = _cli("search", "--db", db, "--text", "red car", "--json")
    body = json.loads(out.stdout)
    assert body["model"].startswith("clip-onnx:") and len(body["results"]) == 1
    out = _cli("search", "--db", db, "--text", "espresso", "--model", "concepts", "--json")
    assert json.loads(out.stdout)["model"] == "concepts"


def test_text_benchmark_runs_small(tmp_path: Path) -> None:
    from bench.text import measure_end_to_end, measure_precision, measure_scoring, text_rows

    scoring = measure_scoring(n=3000, repeats=2)
    assert scoring["top10_same_scores"] == 1.0
    end = measure_end_to_end(n=2000, repeats=1)
    assert end["after_first"]["p50_ms"] > 0
    skipped = measure_precision(root=tmp_path / "absent")
    assert "skipped" in skipped
    query = {"prepare_s": 0.0, "concept_names": 1, "encode": end["after_first"]}
    rows = text_rows(
        {
            "precision": skipped,
            "scoring": scoring,
            "query": query | {"interpret": query["encode"]},
            "end_to_end": end,
        }  # fmt: skip
    )
    assert rows[0][1] == "skipped" and len(rows) == 4
