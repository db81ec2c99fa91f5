"""``resnet-predict`` without a server: which files it sends, in what order, and its usage errors (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.cli import find_images, main


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_directories_are_walked_for_images_sorted_and_files_kept_in_argument_order(tmp_path: Path) -> None:
    for name in ("b.png", "a.JPG", "sub/c.webp", "notes.txt", "sub/deeper/d.jpeg"):
        touch(tmp_path / "dir" / name)
    single = touch(tmp_path / "z.bin")  # named explicitly: sent whatever its suffix
    found = find_images([single, tmp_path / "dir"])
    relative = [str(p.relative_to(tmp_path)) for p in found]
    assert relative == ["z.bin", "dir/a.JPG", "dir/b.png", "dir/sub/c.webp", "dir/sub/deeper/d.jpeg"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d, "no images found in"),
        (lambda d: d / "missing.png", "missing.png: no such file or directory"),
    ],
)
def test_nothing_to_send_is_a_one_line_usage_error(tmp_path: Path, capsys, make, message: str) -> None:
    touch(tmp_path / "readme.txt")
    assert main([str(make(tmp_path)), "--url", "http://127.0.0.1:9"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("resnet-predict: error: ") and message in err


def test_bad_arguments_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["x.png", "--top-k", "0"])
    assert exit_.value.code == 2 and "--top-k" in capsys.readouterr().err
