"""Rehearsal fixtures: tiny hub-cache models of the paper's repos and upstream-format data files.

The models are loaded by repo id + revision with HF_HUB_OFFLINE=1 through the project's own
loaders; the data files go through the download stage (mirror + checksum overlay), the corpus
stage's collection/titles reader, the Tevatron group reader and the SynTOD items stage.
"""

import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from irrepro.download import git_blob_id, load_sources
from irrepro.utils import sha256_file

REPOS = {"meta-llama/Llama-3.1-8B": "BF16", "mistralai/Mistral-7B-v0.1": "BF16",
         "EleutherAI/pythia-6.9b": "F16", "meta-llama/Llama-2-7b-hf": "F16"}


@pytest.fixture(scope="module")
def mirror_texts(shared_data):
    from irrepro.rehearsal.upstream import mirror_passages

    return mirror_passages(shared_data)


@pytest.fixture(scope="module")
def hub(tmp_path_factory, mirror_texts):
    from irrepro.rehearsal.hubcache import build_hub_cache

    cache = tmp_path_factory.mktemp("hub")
    return cache, build_hub_cache(cache, texts=mirror_texts.values())


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, shared_data):
    from irrepro.rehearsal.upstream import OVERLAY_SOURCES, build_upstream_mirror, write_overlaid_sources

    out = tmp_path_factory.mktemp("mirror")
    overlay = build_upstream_mirror(out, shared_data)
    return out, overlay, write_overlaid_sources(overlay, out / OVERLAY_SOURCES)


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory, upstream, shared_data):
    """The paper profile's download stage, offline, over the fixture mirror + the real one."""
    from irrepro.download import download_profile

    out, _, sources = upstream
    raw = tmp_path_factory.mktemp("raw")
    download_profile("paper", raw, mirrors=[str(out), str(shared_data)], allow_network=False, sources_path=sources)
    return raw


def _safetensors_header(path: Path) -> dict:
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(n))


# ----------------------------------------------------------------------------- models
def test_checkpoints_are_stored_as_the_hub_serves_them(hub):
    from irrepro.rehearsal.hubcache import fake_commit
    from irrepro.rehearsal.realconfigs import SPECS

    cache, built = hub
    for repo, dtype in REPOS.items():
        snap = Path(built[repo]["snapshot"])
        assert built[repo]["revision"] == fake_commit(repo) and snap.name == fake_commit(repo)
        index = json.loads((snap / "model.safetensors.index.json").read_text())
        shards = sorted(set(index["weight_map"].values()))
        assert len(shards) >= 2 and shards == sorted(p.name for p in snap.glob("*.safetensors"))
        names = set()
        for shard in shards:
            header = _safetensors_header(snap / shard)
            tensors = {k: v for k, v in header.items() if k != "__metadata__"}
            assert {v["dtype"] for v in tensors.values()} == {dtype}, (repo, shard)
            names |= set(tensors)
        assert names == set(index["weight_map"])
        config = json.loads((snap / "config.json").read_text())
        real = SPECS[repo].config
        assert set(config) == set(real)  # the real field set, nothing transformers-5-specific
        sizes = {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads"}
        assert {k: v for k, v in config.items() if k not in sizes} == {k: v for k, v in real.items() if k not in sizes}
    embed = _safetensors_header(Path(built["meta-llama/Llama-3.1-8B"]["snapshot"]) / json.loads(
        (Path(built["meta-llama/Llama-3.1-8B"]["snapshot"]) / "model.safetensors.index.json").read_text()
    )["weight_map"]["model.embed_tokens.weight"])["model.embed_tokens.weight"]
    assert embed["shape"][0] == 128256  # the real vocabulary rows


def test_cache_layout_is_huggingface_hubs(hub):
    from huggingface_hub import scan_cache_dir

    cache, built = hub
    info = scan_cache_dir(cache)
    assert not info.warnings
    assert {r.repo_id for r in info.repos} == set(REPOS)
    for repo in info.repos:
        (rev,) = repo.revisions
        assert rev.commit_hash == built[repo.repo_id]["revision"] and "main" in rev.refs
        for f in rev.files:
            blob = Path(f.blob_path)
            assert Path(f.file_path).is_symlink() and not os.path.isabs(os.readlink(f.file_path))
            lfs = f.file_name.endswith((".safetensors", ".model")) or blob.stat().st_size >= 10 << 20
            assert blob.name == (sha256_file(blob) if lfs else git_blob_id(blob)), f.file_name


def test_tokenizers_encode_dl19_queries_like_the_original_tokenizers(hub, shared_data):
    import sentencepiece as spm
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    from irrepro.rehearsal.hubtokenizers import LLAMA3_PATTERN, llama3_model_file, mistral_v1_model_file
    from irrepro.rerank.model import load_tokenizer
    from irrepro.trec import read_topics

    _, built = hub
    qrels = {line.split()[0] for line in (shared_data / "trec-dl/qrels.dl19-passage.txt").read_text().splitlines()}
    queries = [q for qid, q in read_topics(shared_data / "trec-dl/topics.dl19-passage.txt").items() if qid in qrels]
    assert len(queries) == 43

    enc = tiktoken.Encoding("llama3", pat_str=LLAMA3_PATTERN, mergeable_ranks=load_tiktoken_bpe(
        str(llama3_model_file())), special_tokens={})
    sp = spm.SentencePieceProcessor(model_file=str(mistral_v1_model_file()))
    llama3 = load_tokenizer(built["meta-llama/Llama-3.1-8B"]["snapshot"])
    for repo in ("mistralai/Mistral-7B-v0.1", "meta-llama/Llama-2-7b-hf"):
        tok = load_tokenizer(built[repo]["snapshot"])
        assert [tok(q).input_ids for q in queries] == [[1] + sp.encode(q) for q in queries], repo
        assert tok.pad_token_id == 0  # <unk>: the project's pad rule for a repo without a pad token
    assert [llama3(q).input_ids for q in queries] == [[128000] + enc.encode(q) for q in queries]
    assert llama3.convert_ids_to_tokens([128001, 128004, 128009, 128255]) == [
        "<|end_of_text|>", "<|finetune_right_pad_id|>", "<|eot_id|>", "<|reserved_special_token_247|>"]
    assert llama3.pad_token_id == 128001

    neox = load_tokenizer(built["EleutherAI/pythia-6.9b"]["snapshot"])
    assert neox.convert_ids_to_tokens([0, 1]) == ["<|endoftext|>", "<|padding|>"]
    assert neox.eos_token_id == neox.bos_token_id == neox.unk_token_id == 0
    ids = neox(queries[0]).input_ids
    assert 0 not in ids and neox.decode(ids) == queries[0]  # no BOS/EOS added, byte-level round trip


_LOAD_OFFLINE = r"""
import json, sys
from pathlib import Path
from irrepro.rehearsal.hubcache import fake_commit
from irrepro.rehearsal.realconfigs import SPECS
from irrepro.study1.bases import fetch_hub_base, resolve_base
from irrepro.rerank.model import load_reranker
from transformers import AutoModelForCausalLM

out = {}
for repo, spec in SPECS.items():
    base_dir = Path(sys.argv[1]) / repo.replace("/", "--")
    pinned = fetch_hub_base(repo, fake_commit(repo), base_dir)  # the paper route's base stage
    if repo == "meta-llama/Llama-2-7b-hf":  # the SynTOD TOD base: a causal LM
        model = AutoModelForCausalLM.from_pretrained(resolve_base(base_dir))
        out[repo] = {"pinned": pinned, "class": type(model).__name__, "dtype": str(model.dtype)}
        continue
    model, tok = load_reranker(resolve_base(base_dir), rank=2, targets="all")
    base = model.base_model.model
    out[repo] = {"pinned": pinned, "class": type(base).__name__, "dtype": str(base.dtype),
                 "rope": (base.config.rope_parameters or {}).get("rope_type"), "pad": base.config.pad_token_id}
try:
    AutoModelForCausalLM.from_pretrained("meta-llama/Llama-3.1-8B", revision="0" * 40)
    out["wrong_revision"] = "loaded"
except Exception as exc:
    out["wrong_revision"] = type(exc).__name__
print("RESULT" + json.dumps(out))
"""


def test_models_load_by_id_and_revision_offline_through_the_paper_code(hub, tmp_path):
    from irrepro.rehearsal.hubcache import fake_commit

    cache, _ = hub
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf-home"),
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    env.pop("HF_TOKEN", None)
    proc = subprocess.run([sys.executable, "-c", _LOAD_OFFLINE, str(tmp_path / "bases")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    expect = {"meta-llama/Llama-3.1-8B": ("LlamaForSequenceClassification", "torch.bfloat16"),
              "mistralai/Mistral-7B-v0.1": ("MistralForSequenceClassification", "torch.bfloat16"),
              "EleutherAI/pythia-6.9b": ("GPTNeoXForSequenceClassification", "torch.float16"),
              "meta-llama/Llama-2-7b-hf": ("LlamaForCausalLM", "torch.float16")}
    for repo, (cls, dtype) in expect.items():
        assert out[repo]["pinned"] == {"id": repo, "revision": fake_commit(repo)}
        assert (out[repo]["class"], out[repo]["dtype"]) == (cls, dtype), repo
    assert out["meta-llama/Llama-3.1-8B"]["rope"] == "llama3"  # rope_scaling of the real config read
    assert out["meta-llama/Llama-3.1-8B"]["pad"] == 128001 and out["mistralai/Mistral-7B-v0.1"]["pad"] == 0
    assert out["wrong_revision"] != "loaded"  # offline: only the pinned revision exists


# ----------------------------------------------------------------------------- data
def test_download_stage_verifies_the_fixtures_against_the_overlay(upstream, downloaded):
    out, overlay, _ = upstream
    by_name = {s.name: s for s in load_sources()}
    for name, pins in overlay.items():
        path = downloaded / by_name[name].dest
        assert sha256_file(path) == pins["sha256"] and path.stat().st_size == pins["size"], name
    assert (downloaded / "MANIFEST.tsv").is_file()
    # the real pins are untouched
    assert by_name["msmarco_collection"].md5 == "87dd01826da3e2ad45447ba5af577628"
    assert by_name["tevatron_msmarco_aug_train"].size == 2155342997


def test_fixtures_are_byte_identical_when_rebuilt(upstream, shared_data, tmp_path):
    from irrepro.rehearsal.upstream import build_upstream_mirror

    assert build_upstream_mirror(tmp_path, shared_data) == upstream[1]


def test_overlay_with_a_wrong_checksum_is_refused(upstream, shared_data, tmp_path):
    from irrepro.download import DownloadError, download_profile
    from irrepro.rehearsal.upstream import write_overlaid_sources

    out, overlay, _ = upstream
    bad = {**overlay, "dev_qrels": {**overlay["dev_qrels"], "sha256": "0" * 64}}
    sources = write_overlaid_sources(bad, tmp_path / "sources.yaml")
    with pytest.raises(DownloadError, match="dev_qrels"):
        download_profile("paper", tmp_path / "raw", mirrors=[str(out), str(shared_data)], allow_network=False,
                         sources_path=sources)
    with pytest.raises(KeyError, match="no_such_source"):
        write_overlaid_sources({"no_such_source": {"sha256": "0" * 64}}, tmp_path / "x.yaml")


def test_corpus_stage_reads_collection_tar_and_titled_corpus(downloaded, mirror_texts, tmp_path):
    from irrepro.bm25 import write_corpus_from_msmarco_tsv
    from irrepro.datasets import source_path
    from irrepro.rerank.evaluate import load_passages

    corpus = tmp_path / "corpus.jsonl"
    n = write_corpus_from_msmarco_tsv(str(source_path(downloaded, "msmarco_collection")), str(corpus),
                                      titles_path=str(source_path(downloaded, "tevatron_msmarco_corpus")))
    assert n == len(mirror_texts) > 9000
    lines = [json.loads(line) for line in corpus.read_text().splitlines()]
    assert [r["id"] for r in lines] == sorted(mirror_texts, key=int)
    assert all(r["contents"] == mirror_texts[r["id"]].rstrip() for r in lines)
    titles = {r["title"] for r in lines}
    assert "-" in titles and "" in titles  # "-" kept for the input formatter, null read as ""
    passages = load_passages(corpus, {lines[0]["id"]})
    assert set(passages[lines[0]["id"]]) == {"title", "text"}


def test_tevatron_groups_parse_with_the_training_code(downloaded, mirror_texts, tmp_path):
    from irrepro.datasets import source_path
    from irrepro.rerank.data import read_groups
    from irrepro.study1.training import build_train_groups

    path = source_path(downloaded, "tevatron_msmarco_aug_train")
    raw = [json.loads(line) for line in gzip.open(path, "rt", encoding="utf-8")]
    assert list(raw[0]) == ["query_id", "query", "positive_passages", "negative_passages"]
    raw_titles = {p["title"] for r in raw for p in r["positive_passages"] + r["negative_passages"]}
    assert None in raw_titles and "-" in raw_titles
    out = tmp_path / "groups.jsonl"
    n = build_train_groups({"train_data": {"source": "tevatron"}}, str(downloaded), "", "", str(out))
    groups = read_groups(out)
    assert n == len(raw) == len(groups) >= 40
    assert all(len(g["negative_passages"]) >= 15 for g in groups)  # a paper group of 16
    for g in groups:
        for p in g["positive_passages"] + g["negative_passages"]:
            assert p["text"] == mirror_texts[p["docid"]]


def test_dev_subset_is_byte_exact_lines_of_the_real_files(downloaded, shared_data):
    from irrepro.datasets import get, source_path
    from irrepro.trec import read_qrels, read_topics

    dev = get("dev")
    topics, qrels = read_topics(source_path(downloaded, dev.topics)), read_qrels(source_path(downloaded, dev.qrels))
    assert len(topics) == 20 and set(qrels) == set(topics)
    real = (shared_data / "trec-dl/qrels.msmarco-passage.dev-subset.txt").read_bytes().splitlines()
    assert set(source_path(downloaded, dev.qrels).read_bytes().splitlines()) <= set(real)


def test_syntod_training_catalogs_pass_the_items_stage(downloaded, tmp_path):
    from irrepro.syntod.items import items_stage

    P = {"syntod": {"item_split": {"test_fraction": 0.3, "seed": 0, "items_of": "selected"},
                    "train_catalog": {"cooking": "syntod_recipe_corpus",
                                      "ecommerce": "syntod_ecommerce_catalog_4k_final"}}}
    for domain, n in (("cooking", 100), ("ecommerce", 108)):
        m = items_stage(P, domain, downloaded, tmp_path / domain, tmp_path / f"{domain}.json")
        # the fixture also lists LEAKED_TEST_ITEMS test items verbatim: the stage drops exactly those
        assert m["mode"] == "train_catalog" and m["train_items"] == n and m["removed_test_items"] == 3
        assert m["test_items"] == n  # the test catalog stays evaluation-only
