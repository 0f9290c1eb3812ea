"""Bad input, one row a case: every stage refuses it with exit code 2 and one line that names the params key or the
file (and line) and says what was expected, with no traceback, and leaves no output or scratch folder behind."""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import TINY_COLBERT, TINY_DPR, TINY_MATRYOSHKA, TINY_RERANKER, run, write_beir_collection, write_params

from retrieval_pipeline.core.params import deep_merge
from retrieval_pipeline.core.preflight import main as run_preflight
from retrieval_pipeline.core.resolve import run_params, run_resolve
from retrieval_pipeline.core.stage import run_stage

TINY = deep_merge(deep_merge(deep_merge(TINY_MATRYOSHKA, TINY_DPR), TINY_RERANKER), TINY_COLBERT)
PAIRS = {"anchor": "question", "positive": "text", "chunk_id": "global_chunk_id"}
GOOD_ROWS = [{"question": f"Who runs plant {n}?", "text": f"Plant {n} is run by company {n % 3}.",
              "global_chunk_id": f"c{n}"} for n in range(12)]
MULTIHOP = {"query_id": 1, "query": "Who runs Alpha?", "answer": ["Beta"], "sp": ["Alpha", "Beta"],
            "type": "bridge", "context_titles": ["Alpha", "Beta"], "context": "Alpha\nAlpha is run by Beta.\nBeta\nB."}


@dataclass(frozen=True)
class Case:
    """`setup` writes the case's files into the folder and returns params overrides; `stage` then fails."""

    id: str
    setup: Callable[[Path], dict]
    message: str  # a regex the error line must match
    family: str = "matryoshka"
    stage: str = "prepare"  # "params" or "resolve" for params: they validate them before any other stage runs
    before: tuple[str, ...] = ()  # stages that run successfully first, after resolve (their outputs may stay)
    environment: dict = field(default_factory=dict)


def params(overrides: dict) -> Callable[[Path], dict]:
    return lambda folder: overrides


def pair_file(name: str, text: str | bytes, columns: dict | None = PAIRS) -> Callable[[Path], dict]:
    def setup(folder: Path) -> dict:
        path = folder / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        data = {"source": "local", "local": {"path": str(path)}, "test_size": 0.25, "dev_size": 0.0}
        return {"matryoshka": {"embedded": {"data": {**data, "columns": columns} if columns else data}}}
    return setup


def parquet_pairs(chunk_ids: list) -> Callable[[Path], dict]:
    def setup(folder: Path) -> dict:
        import polars as pl

        path = folder / "pairs.parquet"
        rows = GOOD_ROWS[:len(chunk_ids)]
        pl.DataFrame({"question": [row["question"] for row in rows], "text": [row["text"] for row in rows],
                      "global_chunk_id": chunk_ids}, schema_overrides={"global_chunk_id": pl.String}
                     if not chunk_ids else None).write_parquet(path)
        return pair_file(path.name, path.read_bytes())(folder)
    return setup


def labelled_pairs(keep: list[int], labels: list[int]) -> Callable[[Path], dict]:
    """DPR claim/evidence rows with labels, and the labels kept."""
    def setup(folder: Path) -> dict:
        path = folder / "claims.jsonl"
        path.write_text(jsonl([{"claim": row["question"], "evidence": row["text"], "label": labels[n % len(labels)]}
                               for n, row in enumerate(GOOD_ROWS)]), encoding="utf-8")
        return {"dpr": {"embedded": {"data": {"source": "local", "local": {"path": str(path)}, "keep_labels": keep,
                                              "columns": {"query": "claim", "passage": "evidence",
                                                          "label": "label"}}}}}
    return setup


def jsonl(rows: list) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def csv(rows: list[dict]) -> str:
    return "question,text,global_chunk_id\n" + "".join(
        f"{row['question']},{row['text']},{row['global_chunk_id']}\n" for row in rows)


def beir(change: Callable[[Path], None], family: str = "matryoshka") -> Callable[[Path], dict]:
    def setup(folder: Path) -> dict:
        collection = write_beir_collection(folder / "collection")
        change(collection)
        return {family: {"embedded": {"data": {"source": "local", "local": {"path": str(collection)}}}}}
    return setup


def rewrite(relative: str, edit: Callable[[str], str]) -> Callable[[Path], None]:
    def change(collection: Path) -> None:
        path = collection / relative
        if relative.endswith(".gz"):
            text = gzip.decompress(path.read_bytes()).decode("utf-8")
            path.write_bytes(gzip.compress(edit(text).encode("utf-8")))
        else:
            path.write_bytes(edit(path.read_bytes().decode("utf-8")).encode("utf-8"))
    return change


def corpus_with_bad_byte(line: int) -> Callable[[Path], None]:
    """The corpus grown to more lines than a decoder reads in one block, with a Latin-1 byte on line `line`."""
    def change(collection: Path) -> None:
        path = collection / "corpus.jsonl.gz"
        lines = gzip.decompress(path.read_bytes()).split(b"\n")
        lines = [text for text in lines if text.strip()]
        lines += [json.dumps({"_id": f"extra{n}", "text": f"Plant {n} is run by company {n % 3}."}).encode()
                  for n in range(line - len(lines) + 200)]
        lines[line - 1] = '{"_id": "extra-latin", "text": "caf\xe9"}'.encode("latin-1")
        path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    return change


def multihop(rows: list) -> Callable[[Path], dict]:
    def setup(folder: Path) -> dict:
        path = folder / "multihop.jsonl"
        path.write_text(jsonl(rows), encoding="utf-8")
        return {"reranker": {"embedded": {"data": {"multihop": {"source": "local", "local": {"path": str(path)}}}}}}
    return setup


def model_folder(files: dict[str, bytes]) -> Callable[[Path], dict]:
    def setup(folder: Path) -> dict:
        model = folder / "my-model"
        model.mkdir()
        for name, content in files.items():
            (model / name).write_bytes(content)
        return {"matryoshka": {"embedded": {"model": {"base": str(model)}}}}
    return setup


def remote(url: str | None) -> Callable[[Path], dict]:
    """A DVC repository whose default remote is `url` (none when None)."""
    def setup(folder: Path) -> dict:
        run(["git", "init", "-q"], folder)
        run(["dvc", "init", "-q"], folder)
        if url:
            run(["dvc", "remote", "add", "-d", "team", url], folder)
        return {}
    return setup


def drop_first_line_field(field_name: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        first, rest = text.split("\n", 1)
        record = json.loads(first)
        record.pop(field_name)
        return json.dumps(record) + "\n" + rest
    return edit


CASES = [
    # params.yaml, refused by the resolve stage; a key the embedded override sets is named as that override's key
    Case("profile-unknown", params({"profile": "gpu"}), r"params.yaml: profile: expected one of embedded, seed",
         stage="resolve"),
    Case("source-unknown", params({"matryoshka": {"embedded": {"data": {"source": "ftp"}}}}),
         r"matryoshka.embedded.data.source: Input should be 'synthetic', 'hf', 'hf_beir' or 'local'", stage="resolve"),
    Case("test-size-above-one", params({"matryoshka": {"embedded": {"data": {"test_size": 1.5}}}}),
         r"matryoshka.embedded.data.test_size: .*less than 1", stage="resolve"),
    Case("seed-not-an-integer", params({"matryoshka": {"seed": "abc"}}), r"matryoshka.seed: .*integer",
         stage="resolve"),
    Case("misspelt-key", params({"matryoshka": {"embedded": {"train": {"learning_rat": 1e-4}}}}),
         r"matryoshka.embedded.train.learning_rat: unknown key; did you mean 'learning_rate'\?", stage="resolve"),
    Case("misspelt-key-nothing-near", params({"matryoshka": {"embedded": {"train": {"speed": 2}}}}),
         r"matryoshka.embedded.train.speed: unknown key; expected one of: batch_size", stage="resolve"),
    Case("misspelt-embedded", lambda folder: {"matryoshka": {"embeded": {"train": {"epochs": 3}}}},
         r"matryoshka.embeded: unknown key; did you mean 'embedded'\?", stage="resolve"),
    Case("misspelt-embedded-section", params({"matryoshka": {"embedded": {"trian": {"epochs": 3}}}}),
         r"matryoshka.embedded.trian: unknown section; did you mean 'train'\?", stage="resolve"),
    Case("seed-negative", params({"matryoshka": {"seed": -1}}), r"matryoshka.seed: .*greater than or equal to 0",
         stage="resolve"),
    Case("seed-beyond-32-bits", params({"dpr": {"seed": 2**32}}), r"dpr.seed: .*less than or equal to 4294967295",
         family="dpr", stage="resolve"),
    Case("collection-not-a-folder", params({"collection": "/nonexistent/collection"}),
         r"params.yaml: collection: '/nonexistent/collection' is not a folder; expected a BEIR folder",
         stage="resolve"),
    Case("collection-not-a-path", params({"collection": ["a", "b"]}),
         r"params.yaml: collection: expected the path of a BEIR folder, a BEIR dataset on the hub", family="dpr",
         stage="resolve"),
    Case("collection-hub-without-qrels", params({"collection": {"corpus": {"path": "BeIR/scifact"},
                                                                "queries": {"path": "BeIR/scifact"}}}),
         r"params.yaml:\n  collection.qrels: Field required", family="reranker", stage="resolve"),
    # params.yaml as a whole, refused by the params stage before any family's resolve
    Case("family-misspelt", params({"matryoshkaa": {"embedded": {"train": {"epochs": 3}}}}),
         r"params.yaml: matryoshkaa: no family, section or the report reads this key; did you mean 'matryoshka'\?",
         stage="params"),
    Case("top-level-key-nothing-near", params({"learning_rate": 1e-4}),
         r"params.yaml: learning_rate: no family, section or the report reads this key; expected one of: colbert",
         stage="params"),
    Case("report-key-misspelt", params({"report": {"permutation": 100}}),
         r"report.permutation: unknown key; did you mean 'permutations'\?", stage="params"),
    Case("report-seed-negative", params({"report": {"seed": -5}}), r"report.seed: .*greater than or equal to 0",
         stage="params"),
    Case("report-family-misspelt", params({"report": {"families": {"colbrt": {"metrics": ["ndcg@10"],
                                                                             "compare": [["base", "x"]]}}}}),
         r"report.families.colbrt: not a family of dvc.yaml's vars.families; did you mean 'colbert'\?",
         stage="params"),
    Case("dims-ascending", params({"matryoshka": {"embedded": {"model": {"dims": [32, 64]}}}}),
         r"matryoshka.embedded.model.dims", stage="resolve"),
    Case("facilities-zero", params({"dpr": {"embedded": {"data": {"synthetic": {"facilities": 0}}}}}),
         r"dpr.embedded.data.synthetic.facilities: Input should be greater than 0", family="dpr", stage="resolve"),
    Case("local-without-path", params({"matryoshka": {"embedded": {"data": {"source": "local"}}}}),
         r"matryoshka.embedded.data: .*source is 'local' but the 'local' section", stage="resolve"),
    Case("reranker-no-negatives", params({"reranker": {"embedded": {"mine": {"negatives": {
        "hard_per_positive": 0, "easy_per_positive": 0}}}}}),
         r"reranker.embedded.mine.negatives: .*negative", family="reranker", stage="resolve"),
    Case("colbert-pool-factor-zero", params({"colbert": {"embedded": {"evaluate": {"pool_factors": [0, 2]}}}}),
         r"colbert.embedded.evaluate.pool_factors", family="colbert", stage="resolve"),
    Case("embedded-section-missing", lambda folder: {"matryoshka": {"embedded": None}},
         r"matryoshka.embedded: expected a mapping with the sections", stage="resolve"),
    Case("report-label-misspelt",
         params({"report": {"families": {"colbert": {"compare": [["base", "pooling_awre"]]}}}}),
         r"params.yaml: report.families.colbert.compare\[0\]: 'pooling_awre' is not a model colbert produces; "
         r"expected one of base, without_pooling, pooling_aware", family="colbert", stage="resolve"),
    Case("unknown-family", params({}), r"unknown family 'colbrt'", family="colbrt", stage="resolve"),
    Case("family-a-module", params({}), r"unknown family '__init__': expected one of colbert, dpr, matryoshka, "
         r"reranker \(the packages in retrieval_pipeline/families/\)", family="__init__", stage="resolve"),
    # pair files: CSV, JSON Lines, Parquet
    Case("file-missing", lambda folder: {"matryoshka": {"embedded": {"data": {
        "source": "local", "local": {"path": str(folder / "absent.csv")}, "columns": PAIRS}}}}, r"absent.csv"),
    Case("file-unknown-extension", pair_file("pairs.txt", "question,text\n"), r"pairs.txt: .*csv"),
    Case("csv-missing-column", pair_file("pairs.csv", "question,body,global_chunk_id\nq,t,c\n"),
         r"pairs.csv: missing column\(s\) text"),
    Case("csv-ragged-line", pair_file("pairs.csv", csv(GOOD_ROWS[:3]) + "a,b,c,d,e\n" + csv(GOOD_ROWS[3:])[31:]),
         r"pairs.csv: line 5"),
    Case("csv-not-utf8", pair_file("pairs.csv", csv(GOOD_ROWS).encode() + "Qui dirige l'usine?,caf\xe9,c99\n"
                                   .encode("latin-1")), r"pairs.csv: .*(UTF-8|utf-8)"),
    Case("csv-empty-text", pair_file("pairs.csv", csv(GOOD_ROWS) + "Who runs plant 99?, ,c99\n"),
         r"pairs.csv: row 13: column 'text' is empty"),
    Case("jsonl-bad-json", pair_file("pairs.jsonl", jsonl(GOOD_ROWS[:2]) + "{not json}\n" + jsonl(GOOD_ROWS[2:])),
         r"pairs.jsonl: line 3"),
    Case("jsonl-not-an-object", pair_file("pairs.jsonl", jsonl(GOOD_ROWS[:2]) + "[1, 2]\n"),
         r"pairs.jsonl: line 3"),
    Case("jsonl-nan-chunk-id", pair_file("pairs.jsonl", jsonl(GOOD_ROWS) + '{"question": "Who?", "text": "X.", '
                                         '"global_chunk_id": NaN}\n'),
         r"pairs.jsonl: line 13: NaN is not valid JSON"),
    Case("parquet-nan-chunk-id", parquet_pairs([float(n) for n in range(11)] + [float("nan")]),
         r"pairs.parquet: column 'global_chunk_id' holds floating-point numbers \(row 12 is nan\); expected ids "
         r"that are strings or integers"),
    Case("jsonl-float-chunk-ids", pair_file("pairs.jsonl", jsonl(
        [{**row, "global_chunk_id": float(n) + 0.5} for n, row in enumerate(GOOD_ROWS)])),
         r"pairs.jsonl: .*global_chunk_id.*(string|integer)"),
    Case("one-distinct-chunk", pair_file("pairs.jsonl", jsonl(
        [{**row, "text": "One text.", "global_chunk_id": "c0"} for row in GOOD_ROWS])), r"pairs.jsonl: .*corpus"),
    Case("chunk-id-two-texts", pair_file("pairs.jsonl", jsonl(
        GOOD_ROWS + [{**GOOD_ROWS[0], "question": "Another?", "text": "Different."}])),
         r"pairs.jsonl: .*global_chunk_id 'c0'|pairs.jsonl: .*chunk_id"),
    Case("csv-empty-file", pair_file("pairs.csv", ""),
         r"pairs.csv: empty \(0 bytes\); expected a header row, then a row per pair"),
    Case("csv-header-only", pair_file("pairs.csv", "question,text,global_chunk_id\n"), r"pairs.csv: .*no rows"),
    Case("jsonl-empty-file", pair_file("pairs.jsonl", ""),
         r"pairs.jsonl: empty \(0 bytes\); expected one JSON object per line$"),
    Case("jsonl-blank-lines-only", pair_file("pairs.jsonl", "\n\n"), r"pairs.jsonl: empty \(2 bytes\)"),
    Case("parquet-no-rows", parquet_pairs([]), r"pairs.parquet: .*no rows"),
    Case("label-filter-keeps-nothing", labelled_pairs(keep=[0], labels=[1, 2]),
         r"claims.jsonl: no row has a label in dpr.embedded.data.keep_labels \(\[0\]\); the labels are 1, 2",
         family="dpr"),
    Case("parquet-corrupt", pair_file("pairs.parquet", b"PAR1 this is not parquet"), r"pairs.parquet"),
    Case("columns-name-absent-column", pair_file("pairs.jsonl", jsonl(GOOD_ROWS),
                                                 {**PAIRS, "anchor": "query"}),
         r"pairs.jsonl: missing column\(s\) query"),
    # BEIR folders
    Case("beir-no-corpus", beir(lambda c: (c / "corpus.jsonl.gz").unlink()), r"collection.*corpus"),
    Case("beir-corpus-bad-json", beir(rewrite("corpus.jsonl.gz", lambda t: t.replace("}", "", 1))),
         r"corpus.jsonl.gz: line 1: not valid JSON"),
    Case("beir-corpus-no-id", beir(rewrite("corpus.jsonl.gz", drop_first_line_field("_id"))),
         r"corpus.jsonl.gz: line 1: no '_id' field"),
    Case("beir-duplicate-id", beir(rewrite("corpus.jsonl.gz", lambda t: t + t.split("\n", 1)[0] + "\n")),
         r"corpus.jsonl.gz: line \d+: duplicate _id"),
    Case("beir-qrels-header", beir(rewrite("qrels/test.tsv", lambda t: "q\td\ts\r\n" + t.split("\n", 1)[1])),
         r"test.tsv: line 1: header"),
    Case("beir-qrels-score", beir(rewrite("qrels/test.tsv", lambda t: t.replace("\t2\r", "\thigh\r", 1))),
         r"test.tsv: line 2: score 'high' is not an integer"),
    Case("beir-qrels-unknown-document", beir(rewrite("qrels/train.tsv", lambda t: t + t.split("\r\n")[1]
                                                     .split("\t")[0] + "\tghost\t1\r\n")), r"train.tsv: .*ghost"),
    Case("beir-test-all-zero", beir(rewrite("qrels/test.tsv", lambda t: t.replace("\t2\r", "\t0\r")
                                            .replace("\t1\r", "\t0\r"))), r"test.*no .*relevant|test.*zero"),
    Case("beir-colbert-test-all-zero", beir(rewrite("qrels/test.tsv", lambda t: t.replace("\t2\r", "\t0\r")
                                                   .replace("\t1\r", "\t0\r")), "colbert"),
         r"BEIR folder .*collection: the test split has no query with a relevant document", family="colbert"),
    Case("beir-qrels-two-grades", beir(rewrite("qrels/test.tsv", lambda t: t + "\t".join(
        t.split("\r\n")[1].split("\t")[:2]) + "\t0\r\n")),
         r"test.tsv: line \d+: query-id '.*', corpus-id '.*' judged 0, but \d on line 2; expected one grade per pair"),
    Case("beir-no-test-split", beir(lambda c: (c / "qrels" / "test.tsv").unlink()), r"test.tsv"),
    Case("beir-not-utf8-far-down", beir(corpus_with_bad_byte(1500)),
         r"corpus.jsonl.gz: line 1500: not valid UTF-8 \(byte 0xe9 at column 36\); expected UTF-8 text"),
    Case("beir-corrupt-gzip", beir(lambda c: (c / "corpus.jsonl.gz").write_bytes(b"\x1f\x8b\x08garbage")),
         r"corpus.jsonl.gz: cannot read the file"),
    Case("beir-dpr", beir(lambda c: (c / "queries.jsonl").write_text(""), "dpr"), r"queries.jsonl: no queries",
         family="dpr"),
    Case("beir-colbert", beir(rewrite("qrels/test.tsv", lambda t: t + "ghost\tdoc0\t1\r\n"), "colbert"),
         r"test.tsv: .*ghost", family="colbert"),
    # LongRAG rows (reranker)
    Case("longrag-answer-not-a-list", multihop([MULTIHOP, {**MULTIHOP, "query_id": 2, "answer": None}]),
         r"multihop.jsonl: row 2: column 'answer' must be a list of strings", family="reranker"),
    Case("longrag-supporting-title-absent", multihop([{**MULTIHOP, "sp": ["Alpha", "Gamma"]}]),
         r"multihop.jsonl: row 1: supporting title\(s\) \['Gamma'\]", family="reranker"),
    Case("longrag-empty-context", multihop([{**MULTIHOP, "context": " "}]),
         r"multihop.jsonl: row 1: column 'context' is empty", family="reranker"),
    Case("longrag-shared-query-id", multihop([MULTIHOP, {**MULTIHOP, "query": "Who else runs Alpha?"}]),
         r"multihop.jsonl: row 2: query_id '1' was already used by row 1", family="reranker"),
    Case("longrag-missing-column", multihop([{k: v for k, v in MULTIHOP.items() if k != "sp"}]),
         r"missing column\(s\) sp named in reranker.data.multihop.columns", family="reranker"),
    # model references (checked when the stage loads the model)
    Case("model-path-missing", params({"matryoshka": {"embedded": {"model": {"base": "/nonexistent/model"}}}}),
         r"matryoshka.embedded.model.base: .*/nonexistent/model", stage="mine", before=("prepare",)),
    Case("model-folder-without-weights", model_folder({"config.json": b"{}"}),
         r"matryoshka.embedded.model.base: .*my-model.*(weights|safetensors)", stage="mine", before=("prepare",)),
    Case("model-pickle-weights-only", model_folder({"config.json": b'{"model_type": "bert"}',
                                                    "pytorch_model.bin": b"\x80\x02}q\x00."}),
         r"matryoshka.embedded.model.base: .*safetensors", stage="mine", before=("prepare",)),
    Case("model-not-in-cache-offline", params({"matryoshka": {"embedded": {"model": {"base": "acme/no-such-model"}}}}),
         r"matryoshka.embedded.model.base: .*acme/no-such-model", stage="mine", before=("prepare",),
         environment={"HF_HUB_OFFLINE": "1"}),
    Case("model-id-malformed", params({"matryoshka": {"embedded": {"model": {"base": "a/b/c/d"}}}}),
         r"matryoshka.embedded.model.base: .*a/b/c/d", stage="mine", before=("prepare",)),
    Case("length-beyond-position-embeddings",
         params({"matryoshka": {"embedded": {"model": {"max_seq_length": 100000}}}}),
         r"matryoshka.embedded.model.max_seq_length: 100000.*512", stage="mine", before=("prepare",)),
    Case("reranker-length-beyond-positions", params({"reranker": {"embedded": {"model": {"max_length": 4096}}}}),
         r"reranker.embedded.model.max_length: 4096", family="reranker", stage="train", before=("prepare", "mine")),
    # DVC remotes (the preflight's --remote check)
    Case("remote-folder-missing", remote("/nonexistent/dvc-storage"),
         r"remote 'team' \(/nonexistent/dvc-storage\): .* does not exist", stage="preflight"),
    Case("remote-not-configured", remote(None), r"remote: none configured", stage="preflight"),
    # a host name that does not resolve: said so, not "does not exist"
    Case("remote-host-unresolvable", remote("ssh://me@no-such-host.invalid/srv/dvc"),
         r"remote 'team' \(ssh://me@no-such-host.invalid/srv/dvc\): the host no-such-host.invalid does not resolve",
         stage="preflight"),
    # a host that does not answer (or no route to it): one line within the preflight's timeout, not minutes
    Case("remote-host-dead", remote("ssh://me@10.255.255.1/srv/dvc"),
         r"remote 'team' \(ssh://me@10.255.255.1/srv/dvc\): (no answer within \d+ s|\w+: .*check its URL)",
         stage="preflight"),
]


def outputs(folder: Path) -> set[Path]:
    """The files the stages write: data/, models/, eval/, metrics/, dvclive/, the scratch folders and the resume
    state."""
    return {path for top in ("data", "models", "eval", "metrics", "dvclive", ".scratch", ".resume")
            for path in (folder / top).rglob("*") if path.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_clear_line_and_leaves_nothing(case, tmp_path, monkeypatch, capsys):
    overrides = case.setup(tmp_path)
    write_params(tmp_path, deep_merge(TINY, overrides))
    monkeypatch.chdir(tmp_path)
    for name, value in case.environment.items():
        monkeypatch.setenv(name, value)
    if case.stage not in ("params", "resolve", "preflight"):
        assert run_resolve([case.family]) == 0
    for stage in case.before:
        assert run_stage(stage, [case.family]) == 0
    existing = outputs(tmp_path)
    capsys.readouterr()
    if case.stage == "preflight":
        code = run_preflight([case.family, "--remote"])
    elif case.stage == "resolve":
        code = run_resolve([case.family])
    elif case.stage == "params":
        code = run_params([])
    else:
        code = run_stage(case.stage, [case.family])
    error = capsys.readouterr().err.strip()
    assert code == 2, error
    assert "Traceback" not in error and error.startswith("error: "), error
    # one line, or for params a line naming params.yaml and one per invalid key
    assert len(error.splitlines()) == 1 or error.splitlines()[0].endswith(":") and "params.yaml" in error, error
    assert re.search(case.message, error), error
    left = outputs(tmp_path) - existing
    assert not left, f"left behind: {sorted(str(path) for path in left)}"
    assert not [path for path in tmp_path.rglob("*.partial-*")]


def test_a_stage_script_exits_2_with_one_line_and_a_traceback_only_when_asked(tmp_path):
    import subprocess
    import sys

    write_params(tmp_path, deep_merge(TINY, {"matryoshka": {"embedded": {"data": {"test_size": 1.5}}}}))
    script = Path(__file__).resolve().parents[1] / "stages" / "resolve.py"
    quiet = subprocess.run([sys.executable, str(script), "matryoshka"], cwd=tmp_path, capture_output=True, text=True)
    assert quiet.returncode == 2 and quiet.stderr.startswith("error: ") and "Traceback" not in quiet.stderr
    loud = subprocess.run([sys.executable, str(script), "matryoshka", "--debug"], cwd=tmp_path,
                          capture_output=True, text=True, env={**os.environ})
    assert loud.returncode != 0 and "Traceback" in loud.stderr


def test_a_stage_that_reads_a_section_its_dvc_params_do_not_list_stops(tmp_path, monkeypatch, capsys):
    """Each stage receives only the params sections dvc.yaml lists for it: colbert's evaluate stage may not read
    `train` (DVC would not rerun it when `train` changes), and saying so is one line naming dvc.yaml."""
    from retrieval_pipeline.core.stage import UndeclaredSection, load_stage_family

    write_params(tmp_path, TINY)
    monkeypatch.chdir(tmp_path)
    assert run_resolve(["colbert"]) == 0
    family = load_stage_family("colbert", "evaluate", tmp_path)
    assert family.params.evaluate.pool_factors and family.params.seed == 42
    with pytest.raises(UndeclaredSection, match=r"dvc.yaml: evaluate@colbert reads colbert.train, but the stage's "
                                                r"params list only seed, data, model, mine, evaluate"):
        _ = family.params.train
    with pytest.raises(UndeclaredSection, match="reads every section"):
        family.params.model_dump()
    assert load_stage_family("colbert", "train", tmp_path).params.model_dump()["train"]["epochs"] == 1


@pytest.mark.parametrize("where", ["models", ".resume"])
@pytest.mark.parametrize(("options", "reason"), [("size=1m", "No space left on device"),
                                                 ("ro", "Read-only file system")])
def test_an_output_that_cannot_be_written_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys, small_mount,
                                                                        options, reason, where):
    """The model folder, or the resume state's (where the epoch checkpoints go), on a full disk or on one mounted
    read-only: the train stage names the folder and the reason in one line, and leaves no partial output or
    checkpoint behind."""
    write_params(tmp_path, TINY)
    monkeypatch.chdir(tmp_path)
    assert run_resolve(["matryoshka"]) == 0
    for stage in ("prepare", "base", "mine"):
        assert run_stage(stage, ["matryoshka"]) == 0
    small_mount(tmp_path / where, options)
    existing = outputs(tmp_path)
    capsys.readouterr()
    code = run_stage("train", ["matryoshka"])
    log = capsys.readouterr().err
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and log.rstrip().endswith(errors[0]) and "Traceback" not in log, log
    assert re.match(rf"error: {re.escape(str(tmp_path / where))}/\S*: cannot write \({reason}\); expected an output "
                    r"folder this user can write, with free space", errors[0]), errors
    left = outputs(tmp_path) - existing - set((tmp_path / ".resume").rglob("*"))
    assert not left, sorted(str(path.relative_to(tmp_path)) for path in left)
    assert not list((tmp_path / "models").glob("*"))
    # The resume state keeps complete checkpoints only: where the model folder was refused, the last epoch's, to
    # resume from once there is space; where the checkpoint was refused, none.
    checkpoints = list((tmp_path / ".resume").glob("*/*/checkpoint-*"))
    assert all((checkpoint / "trainer_state.json").is_file() for checkpoint in checkpoints)
    assert bool(checkpoints) == (where == "models")


def test_a_file_beyond_the_size_limit_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """A file-size limit (`ulimit -f`: errno 27, File too large) stops the train stage as a full disk does: one line
    naming the folder and the reason, no traceback, no partial output."""
    import resource
    import subprocess
    import sys

    from helpers import REPO

    write_params(tmp_path, TINY)
    monkeypatch.chdir(tmp_path)
    assert run_resolve(["matryoshka"]) == 0
    for stage in ("prepare", "base", "mine"):
        assert run_stage(stage, ["matryoshka"]) == 0
    existing = outputs(tmp_path)
    limit = 2 ** 20  # the weights are about 90 MB

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run([sys.executable, str(REPO / "stages" / "train.py"), "matryoshka"], cwd=tmp_path,
                            capture_output=True, text=True, preexec_fn=limit_file_size)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert re.match(rf"error: {re.escape(str(tmp_path))}/\S+: cannot write \(File too large\); expected an output "
                    r"folder this user can write, with free space", errors[0]), errors
    left = outputs(tmp_path) - existing - set((tmp_path / ".resume").rglob("*"))
    assert not left, sorted(str(path.relative_to(tmp_path)) for path in left)
