"""The checkpoint registry, cache location, verified download and `sampo-engine weights`."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import re
import socket
import sys
import threading
import time

import pytest

from sampo_engine.cli import main
from sampo_engine.errors import CheckpointError, ConfigError
from sampo_engine.models import checkpoints as weights
from sampo_engine.models.checkpoints import CheckpointInfo

PAYLOAD = os.urandom(300_000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("SAMPO_CACHE_DIR", str(folder))
    monkeypatch.delenv("SAMPO_WEIGHTS_BASE_URL", raising=False)
    return folder


@pytest.fixture
def fake(tmp_path, monkeypatch, cache):
    """A registered 'fake' model whose file is served from a local folder."""
    source = tmp_path / "mirror"
    source.mkdir()
    (source / "fake.pth").write_bytes(PAYLOAD)
    info = CheckpointInfo("fake", "fake.pth", PAYLOAD_SHA, len(PAYLOAD))
    monkeypatch.setitem(weights.CHECKPOINTS, "fake", info)
    return source


@pytest.fixture
def http_mirror(fake):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(fake))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_registry_holds_the_official_checkpoints():
    assert {m: i.filename for m, i in weights.CHECKPOINTS.items()} == {
        "vit_b": "sam_vit_b_01ec64.pth",
        "vit_l": "sam_vit_l_0b3195.pth",
        "vit_h": "sam_vit_h_4b8939.pth",
    }
    for info in weights.CHECKPOINTS.values():
        assert re.fullmatch(r"[0-9a-f]{64}", info.sha256)
        assert info.size > 300_000_000
    assert weights.CHECKPOINTS["vit_b"].sha256.startswith("ec2df627")
    assert weights.checkpoint_url("vit_h") == (
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"
    )


def test_cache_location(cache, monkeypatch, tmp_path):
    assert weights.checkpoint_path("vit_b") == cache / "checkpoints" / "sam_vit_b_01ec64.pth"
    monkeypatch.delenv("SAMPO_CACHE_DIR")
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert weights.cache_root() == tmp_path / "xdg" / "sampo"
        monkeypatch.delenv("XDG_CACHE_HOME")
        assert weights.cache_root() == weights.Path.home() / ".cache" / "sampo"


def test_models_without_a_checkpoint_are_refused(cache):
    with pytest.raises(ConfigError, match="trained from scratch"):
        weights.checkpoint_path("tiny")
    with pytest.raises(ConfigError, match="vit_b, vit_l, vit_h"):
        weights.find_checkpoint("vit_q")


def test_download_from_file_url(fake, monkeypatch, cache):
    monkeypatch.setenv("SAMPO_WEIGHTS_BASE_URL", fake.as_uri())
    assert weights.find_checkpoint("fake") is None
    path = weights.download_checkpoint("fake", progress=False)
    assert path == cache / "checkpoints" / "fake.pth"
    assert path.read_bytes() == PAYLOAD
    assert weights.find_checkpoint("fake") == path
    assert weights.find_checkpoint("fake", verify=True) == path
    assert _leftovers(cache) == ["fake.pth"]
    calls = []
    weights.download_checkpoint(
        "fake", progress=lambda done, total: calls.append((done, total)), force=True
    )
    assert calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    # a complete cached file is not fetched again, even with the mirror gone
    (fake / "fake.pth").unlink()
    assert weights.download_checkpoint("fake", progress=False) == path
    with pytest.raises(CheckpointError, match="cannot reach"):
        weights.download_checkpoint("fake", progress=False, force=True)
    assert path.read_bytes() == PAYLOAD  # a failed --force leaves the good file alone


def test_download_from_local_http_server_with_progress(http_mirror, monkeypatch, cache, capsys):
    monkeypatch.setenv("SAMPO_WEIGHTS_BASE_URL", http_mirror)
    path = weights.download_checkpoint("fake", progress=True)
    assert path.read_bytes() == PAYLOAD
    assert "fake.pth" in capsys.readouterr().err  # the tqdm bar
    assert _leftovers(cache) == ["fake.pth"]


def test_sha_mismatch_is_detected_and_nothing_is_left(http_mirror, monkeypatch, cache):
    wrong = "0" * 64
    monkeypatch.setitem(
        weights.CHECKPOINTS, "fake", CheckpointInfo("fake", "fake.pth", wrong, len(PAYLOAD))
    )
    with pytest.raises(CheckpointError) as err:
        weights.download_checkpoint("fake", url=http_mirror + "fake.pth", progress=False)
    message = str(err.value)
    assert wrong in message and PAYLOAD_SHA in message and "corrupt" in message
    assert weights.find_checkpoint("fake") is None
    assert _leftovers(cache) == []


def test_truncated_download_is_detected(fake, monkeypatch, cache):
    monkeypatch.setitem(
        weights.CHECKPOINTS,
        "fake",
        CheckpointInfo("fake", "fake.pth", PAYLOAD_SHA, len(PAYLOAD) + 10),
    )
    with pytest.raises(CheckpointError, match=f"got {len(PAYLOAD)} bytes"):
        weights.download_checkpoint("fake", url=(fake / "fake.pth").as_uri(), progress=False)
    assert _leftovers(cache) == []


def test_unreachable_url_fails_fast_with_manual_placement(fake, monkeypatch, cache):
    url = f"http://127.0.0.1:{_free_port()}/mirror"
    monkeypatch.setenv("SAMPO_WEIGHTS_BASE_URL", url)
    start = time.monotonic()
    with pytest.raises(CheckpointError) as err:
        weights.download_checkpoint("fake", progress=False)
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert str(cache / "checkpoints" / "fake.pth") in message  # where to put it by hand
    assert f"{url}/fake.pth" in message  # and where to fetch it from
    assert _leftovers(cache) == []


def test_silent_server_times_out(fake, cache):
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/fake.pth"
        start = time.monotonic()
        with pytest.raises(CheckpointError, match="fake.pth"):
            weights.download_checkpoint("fake", url=url, progress=False, timeout=0.5)
        assert time.monotonic() - start < 5
    assert _leftovers(cache) == []


def test_http_404_names_the_status(http_mirror, cache):
    with pytest.raises(CheckpointError, match="HTTP 404"):
        weights.download_checkpoint("fake", url=http_mirror + "missing.pth", progress=False)


def test_find_checkpoint_rejects_incomplete_files(fake, cache):
    target = weights.checkpoint_path("fake")
    target.parent.mkdir(parents=True)
    target.write_bytes(PAYLOAD[:1000])
    assert weights.find_checkpoint("fake") is None
    target.write_bytes(bytes(len(PAYLOAD)))  # right size, wrong content
    assert weights.find_checkpoint("fake") == target
    assert weights.find_checkpoint("fake", verify=True) is None


def test_cli_list_path_download(fake, monkeypatch, cache, capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["MODEL", "FILE", "SIZE", "CACHED", "PATH"]
    vit_b = next(line for line in lines if line.startswith("vit_b"))
    assert "sam_vit_b_01ec64.pth" in vit_b and "375.0 MB" in vit_b
    assert " no " in vit_b and str(cache / "checkpoints" / "sam_vit_b_01ec64.pth") in vit_b
    fake_line = next(line for line in lines if line.startswith("fake"))
    assert " no " in fake_line

    assert main(["weights", "path", "fake"]) == 1
    captured = capsys.readouterr()
    assert captured.out.strip() == str(cache / "checkpoints" / "fake.pth")
    assert "weights download fake" in captured.err

    monkeypatch.setenv("SAMPO_WEIGHTS_BASE_URL", fake.as_uri())
    assert main(["weights", "download", "fake", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(cache / "checkpoints" / "fake.pth")
    assert main(["weights", "path", "fake"]) == 0
    capsys.readouterr()
    assert main(["weights", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    fake_line = next(x for x in listed if x.startswith("fake"))
    assert " yes " in fake_line
    # the small networks packaged beside the shipped model are listed too
    assert any(x.startswith("type head") and "shipped" in x for x in listed)
    assert any(x.startswith("nuclei-small split head") and "shipped" in x for x in listed)


def test_cli_errors_exit_2_with_the_remedy(cache, monkeypatch, capsys):
    assert main(["weights", "path", "tiny"]) == 2
    assert "trained from scratch" in capsys.readouterr().err
    monkeypatch.setenv("SAMPO_WEIGHTS_BASE_URL", f"http://127.0.0.1:{_free_port()}/")
    assert main(["weights", "download", "vit_b", "--no-progress", "--timeout", "2"]) == 2
    err = capsys.readouterr().err
    assert "sam_vit_b_01ec64.pth" in err and "place it at" in err
