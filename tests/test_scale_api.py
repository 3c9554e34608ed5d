"""Scale AI through its API and images behind expiring links: the real `scaleapi` client against a stand-in.

The stand-in (`http.server` on 127.0.0.1, a random port; the client is pointed at it with
`--scale-api-url`, its `api_instance_url`) implements what the converter calls:
`GET /v1/tasks` with the client's query parameters (`project`, `batch`, `status`,
`start_time`/`end_time` from the date filters, `next_token` paging, a few tasks a
page), `GET /v1/task/{id}`, both behind HTTP Basic auth with the key as user name; and
`GET /files/...`, signed links whose `sig` the test can expire (HTTP 403). Every test
that holds a key or a signature checks that neither appears in any output file, log
line or message.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from builders import assert_secrets_nowhere, convert, flat, image_pixels, load_info, load_report, write_image
from http_stand_in import serve
from readback import class_id, decode_png, records_by_source_id
from scale_tasks import box, image_task, mapping_entry, polygon, segment_task, write_index_mask, write_json_list
from typer.testing import Result

from converter.core.secret import Secret
from converter.errors import SampleError
from converter.sources.image_download import ImageDownloader, without_query
from converter.sources.scale_api import ScaleApi, ScaleApiError

KEY_VARIABLE = "SCALE_API_KEY"
KEY = "live_8c1d5e0f2a3b4c6d7e8f9a0b1c2d3e4f"
PROJECT = "kittens"
SIZE = (32, 24)


# ---------------------------------------------------------------------------
# The stand-in


@dataclass(frozen=True)
class Request:
    path: str
    query: dict[str, list[str]]
    authorization: str


@dataclass
class StandIn:
    """The stand-in's state: the account's tasks, its files and links, and every request it received."""

    tasks: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # path under /files/ -> bytes
    valid_signatures: set[str] = field(default_factory=set)
    refreshed: dict[str, dict[str, Any]] = field(default_factory=dict)  # what GET /v1/task/{id} answers
    failures: dict[str, list[int]] = field(default_factory=dict)  # statuses a file answers before its bytes
    file_delay_s: float = 0.0
    echo_key: bool = False  # a careless server that quotes the credentials it refused
    page_size: int = 2
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    in_flight: int = 0
    peak_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def link(self, path: str, signature: str = "fresh") -> str:
        """A signed link to /files/<path>; valid while its signature is in `valid_signatures`."""
        return f"{self.url}/files/{path}?X-Amz-Expires=3600&sig={signature}"

    def add_file(self, path: str, data: bytes, signature: str = "fresh") -> str:
        self.files[path] = data
        self.valid_signatures.add(signature)
        return self.link(path, signature)

    def api_requests(self) -> list[Request]:
        return [request for request in self.requests if request.path.startswith("/v1/")]

    def file_requests(self) -> list[Request]:
        return [request for request in self.requests if request.path.startswith("/files/")]

    def user(self, header: str) -> str | None:
        if not header.startswith("Basic "):
            return None
        user, _, _ = base64.b64decode(header.removeprefix("Basic ")).decode().partition(":")
        return user

    def api(self, path: str, query: dict[str, list[str]], header: str) -> tuple[int, Any]:
        user = self.user(header)
        if user != KEY:
            detail = f"Unauthorized: the key {user} is not valid" if self.echo_key else "Unauthorized"
            return 401, {"error": detail, "status_code": 401}
        if path == "/v1/tasks":
            return 200, self.page(query)
        task_id = path.removeprefix("/v1/task/")
        known = {task["task_id"]: task for task in self.tasks}
        if task_id in known:
            return 200, self.refreshed.get(task_id, known[task_id])
        return 404, {"error": f"no task {task_id}"}

    def page(self, query: dict[str, list[str]]) -> dict[str, Any]:
        """The tasks matching the query, one page; `end_time` is inclusive here, as 'maximum value' reads."""

        def moment(text: str) -> datetime:
            parsed = datetime.fromisoformat(text)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

        def matches(task: dict[str, Any]) -> bool:
            created = moment(task["created_at"])
            return (
                task.get("project") == query.get("project", [None])[0]
                and ("batch" not in query or task.get("batch") == query["batch"][0])
                and ("status" not in query or task["status"] == query["status"][0])
                and ("start_time" not in query or created >= moment(query["start_time"][0]))
                and ("end_time" not in query or created <= moment(query["end_time"][0]))
            )

        selected = [task for task in self.tasks if matches(task)]
        offset = int(query.get("next_token", ["0"])[0])
        docs = selected[offset : offset + self.page_size]
        has_more = offset + self.page_size < len(selected)
        next_token = str(offset + self.page_size) if has_more else None
        return {"docs": docs, "total": len(selected), "limit": self.page_size, "offset": offset,
                "has_more": has_more, "next_token": next_token}  # fmt: skip

    def file(self, path: str, query: dict[str, list[str]]) -> tuple[int, bytes]:
        name = path.removeprefix("/files/")
        with self.lock:
            pending = self.failures.get(name)
            if pending:
                return pending.pop(0), b"failing on purpose"
        if query.get("sig", [""])[0] not in self.valid_signatures:
            return 403, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
        if name not in self.files:
            return 404, b"<Error><Code>NoSuchKey</Code></Error>"
        time.sleep(self.file_delay_s)
        return 200, self.files[name]


def _handler(state: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parsed = urlsplit(self.path)
            query = parse_qs(parsed.query)
            header = self.headers.get("Authorization", "")
            with state.lock:
                state.requests.append(Request(parsed.path, query, header))
                state.in_flight += 1
                state.peak_in_flight = max(state.peak_in_flight, state.in_flight)
            try:
                if parsed.path.startswith("/v1/"):
                    status, document = state.api(parsed.path, query, header)
                    self._send(status, json.dumps(document).encode(), "application/json")
                else:
                    status, payload = state.file(parsed.path, query)
                    self._send(status, payload, "application/octet-stream")
            finally:
                with state.lock:
                    state.in_flight -= 1

        def _send(self, status: int, payload: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read `state.requests` instead."""

    return Handler


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    state = StandIn()
    with serve(_handler(state)) as url:
        state.url = url
        yield state


# ---------------------------------------------------------------------------
# Helpers


def _png(tmp_path: Path, name: str, seed: int, size: tuple[int, int] = SIZE) -> bytes:
    return write_image(tmp_path / "made" / name, image_pixels(*size, seed))


def _add_box_tasks(state: StandIn, tmp_path: Path, count: int, **fields: Any) -> list[dict[str, Any]]:
    """`count` completed imageannotation tasks of PROJECT, one box each, their images on the stand-in."""
    tasks = []
    for n in range(count):
        name = f"{fields.get('batch', 'img')}-{len(state.files)}.png"  # unique: one more file each time
        link = state.add_file(name, _png(tmp_path, name, seed=len(state.files) + 1))
        tasks.append(image_task(f"task-{name}", link, [box("cat", 1 + n, 2, 10, 8)], project=PROJECT, **fields))
    state.tasks.extend(tasks)
    return tasks


def _pull(state: StandIn, tmp_path: Path, *options: str | Path) -> tuple[Result, Path]:
    output = tmp_path / "out"
    result = convert(
        "--scale-project", PROJECT, "--scale-api-url", f"{state.url}/v1", "--download-images", "-o", output, *options
    )
    return result, output


# ---------------------------------------------------------------------------
# Pulling a project


def test_every_page_of_completed_tasks_is_pulled_and_its_images_downloaded(
    stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    tasks = _add_box_tasks(stand_in, tmp_path, 4)
    mask = np.zeros(SIZE[::-1], dtype=np.uint8)
    mask[5:15, 3:20] = 1
    mask[15:, :] = 2
    segment = segment_task(
        "task-seg",
        stand_in.add_file("seg.png", _png(tmp_path, "seg.png", seed=9)),
        stand_in.add_file("seg-index.png", write_index_mask(tmp_path / "made" / "seg-index.png", mask)),
        {"road": mapping_entry(1, pixels=170), "grass": mapping_entry(2, pixels=288)},
        project=PROJECT,
    )
    stand_in.tasks.append(segment)
    stand_in.tasks.append(image_task("pending", stand_in.link("x.png"), [], project=PROJECT, status="pending"))
    stand_in.tasks.append(image_task("elsewhere", stand_in.link("x.png"), [], project="puppies"))

    result, output = _pull(stand_in, tmp_path)

    assert result.exit_code == 0, result.stderr
    pages = [request.query for request in stand_in.api_requests()]
    assert len(pages) == 3  # 5 completed tasks, 2 a page
    assert [page.get("next_token") for page in pages] == [None, ["2"], ["4"]]
    assert all(page["project"] == [PROJECT] and page["status"] == ["completed"] for page in pages)
    assert not any("batch" in page or "start_time" in page or "end_time" in page for page in pages)
    assert {request.authorization for request in stand_in.api_requests()} == {
        "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
    }
    assert {request.authorization for request in stand_in.file_requests()} == {""}  # the key never goes to files
    records = records_by_source_id(output)
    assert sorted(records) == sorted([task["task_id"] for task in tasks] + ["task-seg"])
    for task in tasks:
        name = urlsplit(task["params"]["attachment"]).path.removeprefix("/files/")
        assert records[task["task_id"]]["image/encoded"] == [stand_in.files[name]]
        assert records[task["task_id"]]["image/filename"] == [f"files/{name}".encode()]
    info = load_info(output)
    assert info["classes"] == ["cat", "grass", "road"]
    expected = np.select([mask == 1, mask == 2], [class_id(info, "road"), class_id(info, "grass")], 0)
    np.testing.assert_array_equal(decode_png(records["task-seg"]["image/segmentation/class/encoded"][0]), expected)
    assert records["task-seg"]["image/class/text"] == [b"road", b"grass"]
    assert info["input"]["annotations"] == f"{stand_in.url}/v1 project {PROJECT}"
    assert info["input"]["image_cache"] == str(output / ".image-cache")
    assert ".image-cache" not in info["entries"]  # the cache sits beside the dataset, not in it
    assert load_report(output)["skipped"] == []  # pending tasks are never asked for
    assert_secrets_nowhere([KEY, "sig=fresh"], output, result)


def test_batches_and_dates_are_sent_and_created_before_stays_exclusive(
    stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    kept = [
        *_add_box_tasks(stand_in, tmp_path, 1, batch="b1", created_at="2024-05-01T00:00:00Z"),
        *_add_box_tasks(stand_in, tmp_path, 1, batch="b2", created_at="2024-05-31T23:59:59.999Z"),
    ]
    _add_box_tasks(stand_in, tmp_path, 1, batch="b3", created_at="2024-05-15T00:00:00Z")
    midnight = _add_box_tasks(stand_in, tmp_path, 1, batch="b2", created_at="2024-06-01T00:00:00Z")
    _add_box_tasks(stand_in, tmp_path, 1, batch="b1", created_at="2024-04-30T23:59:59Z")

    result, output = _pull(
        stand_in, tmp_path, "--batch", "b1", "--batch", "b2", "--created-after", "2024-05-01",
        "--created-before", "2024-06-01",
    )  # fmt: skip

    assert result.exit_code == 0, result.stderr
    queries = [request.query for request in stand_in.api_requests()]
    assert [query["batch"] for query in queries] == [["b1"], ["b2"]]
    assert {(query["start_time"][0], query["end_time"][0]) for query in queries} == {("2024-05-01", "2024-06-01")}
    # the stand-in reads end_time as inclusive and sends the task created at midnight; the converter leaves it out
    assert sorted(records_by_source_id(output)) == sorted(task["task_id"] for task in kept)
    assert load_report(output)["skipped"] == []
    assert load_info(output)["input"]["tasks_left_out_by_filters"] == "1"
    assert load_info(output)["input"]["batches"] == "b1, b2"
    assert midnight[0]["task_id"] not in records_by_source_id(output)


@pytest.mark.parametrize("echo_key", [False, True])
def test_a_wrong_key_fails_clearly_with_exit_code_1_and_is_never_shown(
    stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, echo_key: bool
) -> None:
    wrong = "live_0000000000000000deadbeefdeadbeef"
    monkeypatch.setenv(KEY_VARIABLE, wrong)
    stand_in.echo_key = echo_key
    _add_box_tasks(stand_in, tmp_path, 1)

    result, output = _pull(stand_in, tmp_path)

    assert result.exit_code == 1
    message = flat(result.stderr)
    assert (
        f"Scale AI at {stand_in.url}/v1 answered a request for the tasks of project 'kittens' with HTTP 401" in message
    )
    assert "the API key was not accepted; check SCALE_API_KEY" in message
    assert not (output / "dataset_info.yaml").exists()
    assert_secrets_nowhere([wrong], output, result)


def test_the_key_can_come_from_a_file(stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    key_file = tmp_path / "scale-key"
    key_file.write_text(f"  {KEY}\n", encoding="utf-8")
    _add_box_tasks(stand_in, tmp_path, 1)

    result, output = _pull(stand_in, tmp_path, "--scale-api-key-path", key_file)

    assert result.exit_code == 0, result.stderr
    assert len(records_by_source_id(output)) == 1
    assert_secrets_nowhere([KEY], output, result)


def test_a_project_without_a_key_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_VARIABLE, raising=False)

    result = convert("--scale-project", PROJECT, "--download-images", "-o", tmp_path / "out")

    assert result.exit_code == 2
    assert "no Scale AI API key: set SCALE_API_KEY" in flat(result.stderr)


def test_an_unreachable_api_fails_with_exit_code_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    with socket.socket() as probe:  # a port nothing listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"

    result = convert("--scale-project", PROJECT, "--scale-api-url", url, "--download-images", "-o", tmp_path / "o")

    assert result.exit_code == 1
    assert f"cannot reach Scale AI at {url} for the tasks of project 'kittens'" in flat(result.stderr)
    assert KEY not in result.stderr


def test_api_errors_carry_no_key(stand_in: StandIn) -> None:
    stand_in.echo_key = True
    key = "live_ffffffffffeeeeeeeeeedddddddddd"

    with pytest.raises(ScaleApiError) as caught:
        ScaleApi(Secret(key), f"{stand_in.url}/v1").task("anything")

    assert key not in str(caught.value)
    assert key not in repr(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


# ---------------------------------------------------------------------------
# Expiring links


def _expiring_segment_task(state: StandIn, tmp_path: Path) -> tuple[dict[str, Any], np.ndarray[Any, Any]]:
    """A segmentannotation task whose image and mask links have expired; GET /v1/task/{id} gives fresh ones."""
    mask = np.zeros(SIZE[::-1], dtype=np.uint8)
    mask[:, :10] = 1
    image, index = _png(tmp_path, "old.png", seed=3), write_index_mask(tmp_path / "made" / "old-index.png", mask)
    state.files.update({"old.png": image, "old-index.png": index})
    mapping = {"sky": mapping_entry(1, pixels=240)}

    def version(signature: str) -> dict[str, Any]:
        return segment_task(
            "expiring",
            state.link("old.png", signature),
            state.link("old-index.png", signature),
            mapping,
            project=PROJECT,
        )

    state.valid_signatures.add("renewed")
    state.refreshed["expiring"] = version("renewed")
    task = version("expired")
    state.tasks.append(task)
    return task, mask


def test_an_expired_link_is_renewed_through_the_api_and_retried_once(
    stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    _, mask = _expiring_segment_task(stand_in, tmp_path)

    result, output = _pull(stand_in, tmp_path)

    assert result.exit_code == 0, result.stderr
    assert [request.path for request in stand_in.api_requests()] == ["/v1/tasks", "/v1/task/expiring"]
    assert [(request.path, request.query["sig"]) for request in stand_in.file_requests()] == [
        ("/files/old.png", ["expired"]),  # 403
        ("/files/old.png", ["renewed"]),
        ("/files/old-index.png", ["renewed"]),
    ]
    record = records_by_source_id(output)["expiring"]
    np.testing.assert_array_equal(decode_png(record["image/segmentation/class/encoded"][0]), mask)
    assert load_info(output)["input"]["refetch_expired_links"] == "yes"
    assert_secrets_nowhere([KEY, "sig=renewed", "sig=expired"], output, result)


def test_an_expired_link_without_a_key_skips_its_task_as_expired_and_the_rest_converts(
    stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    expiring, _ = _expiring_segment_task(stand_in, tmp_path)
    tasks = [*_add_box_tasks(stand_in, tmp_path, 2), expiring]
    export = write_json_list(tmp_path / "export.json", tasks)
    output = tmp_path / "out"

    result = convert("-a", export, "--download-images", "-o", output)

    assert result.exit_code == 0, result.stderr
    assert sorted(records_by_source_id(output)) == sorted(task["task_id"] for task in tasks[:2])
    (skipped,) = load_report(output)["skipped"]
    assert (skipped["key"], skipped["code"]) == ("task expiring", "expired_url")
    assert (
        f"{stand_in.url}/files/old.png answered HTTP 403 (Forbidden): the signed link has expired" in skipped["reason"]
    )
    assert stand_in.api_requests() == []
    assert load_info(output)["input"]["refetch_expired_links"] == "no (no API key)"
    assert_secrets_nowhere(["sig=", "X-Amz-Expires"], output, result)


def test_an_export_with_a_key_renews_expired_links_too(
    stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    expiring, _ = _expiring_segment_task(stand_in, tmp_path)
    export = write_json_list(tmp_path / "export.json", [expiring])
    output = tmp_path / "out"

    result = convert("-a", export, "--download-images", "--scale-api-url", f"{stand_in.url}/v1", "-o", output)

    assert result.exit_code == 0, result.stderr
    assert [request.path for request in stand_in.api_requests()] == ["/v1/task/expiring"]
    assert sorted(records_by_source_id(output)) == ["expiring"]
    assert_secrets_nowhere([KEY], output, result)


def test_a_link_still_expired_after_renewal_is_reported_once(
    stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    _expiring_segment_task(stand_in, tmp_path)
    stand_in.valid_signatures.clear()

    result, output = _pull(stand_in, tmp_path)

    assert result.exit_code == 1  # nothing converted
    (skipped,) = load_report(output)["skipped"]
    assert skipped["code"] == "expired_url"
    assert skipped["reason"].endswith("the signed link has expired, also after fetching the task again")
    assert [request.path for request in stand_in.api_requests()] == ["/v1/tasks", "/v1/task/expiring"]


def test_the_cache_serves_a_second_run_after_every_link_expired(
    stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    tasks = _add_box_tasks(stand_in, tmp_path, 3)
    export = write_json_list(tmp_path / "export.json", tasks)
    cache = tmp_path / "cache"
    first = convert("-a", export, "--download-images", "--image-cache", cache, "-o", tmp_path / "first")
    assert first.exit_code == 0, first.stderr
    downloads = len(stand_in.file_requests())
    stand_in.valid_signatures.clear()  # every link has expired since
    resigned = [
        {**task, "params": {**task["params"], "attachment": task["params"]["attachment"].replace("fresh", "resigned")}}
        for task in tasks
    ]
    export = write_json_list(tmp_path / "export.json", resigned)

    second = convert("-a", export, "--download-images", "--image-cache", cache, "-o", tmp_path / "second")

    assert second.exit_code == 0, second.stderr
    assert downloads == 3 and len(stand_in.file_requests()) == 3  # nothing fetched again
    assert sorted(records_by_source_id(tmp_path / "second")) == sorted(task["task_id"] for task in tasks)
    assert len(list(cache.iterdir())) == 3


def test_server_errors_are_retried_client_errors_are_not_and_one_failure_stops_nothing(
    stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    flaky, gone, fine = _add_box_tasks(stand_in, tmp_path, 3)
    stand_in.failures["img-0.png"] = [503]
    del stand_in.files["img-1.png"]
    export = write_json_list(tmp_path / "export.json", [flaky, gone, fine])
    output = tmp_path / "out"

    result = convert("-a", export, "--download-images", "-o", output)

    assert result.exit_code == 0, result.stderr
    assert sorted(records_by_source_id(output)) == sorted([flaky["task_id"], fine["task_id"]])
    (skipped,) = load_report(output)["skipped"]
    assert (skipped["key"], skipped["code"]) == (f"task {gone['task_id']}", "download_failed")
    assert skipped["reason"] == f"downloading {stand_in.url}/files/img-1.png failed: HTTP 404"
    paths = [request.path for request in stand_in.file_requests()]
    assert paths.count("/files/img-0.png") == 2 and paths.count("/files/img-1.png") == 1


def test_downloads_run_concurrently(stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    stand_in.file_delay_s = 0.2
    export = write_json_list(tmp_path / "export.json", _add_box_tasks(stand_in, tmp_path, 8))

    result = convert("-a", export, "--download-images", "-o", tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    assert stand_in.peak_in_flight > 1


def test_references_that_are_not_urls_still_resolve_under_the_images_folder(
    stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    write_image(tmp_path / "images" / "raw" / "local.png", image_pixels(*SIZE, 5))
    local = image_task("local", "s3://customer-bucket/raw/local.png", [polygon("leaf", [(1, 1), (9, 1), (5, 9)])])
    export = write_json_list(tmp_path / "export.json", [local, *_add_box_tasks(stand_in, tmp_path, 1)])
    output = tmp_path / "out"

    result = convert("-a", export, "-i", tmp_path / "images", "--download-images", "-o", output)

    assert result.exit_code == 0, result.stderr
    records = records_by_source_id(output)
    assert records["local"]["image/filename"] == [b"raw/local.png"]
    assert len(records) == 2


# ---------------------------------------------------------------------------
# The downloader on its own


def test_retries_back_off_exponentially_and_give_up_after_four_attempts(stand_in: StandIn, tmp_path: Path) -> None:
    link = stand_in.add_file("down.png", b"never served")
    stand_in.failures["down.png"] = [500, 502, 503, 504]
    waits: list[float] = []

    with pytest.raises(SampleError) as caught:
        ImageDownloader(tmp_path / "cache", sleep=waits.append).fetch(link)

    assert caught.value.code == "download_failed"
    assert caught.value.message == f"downloading {stand_in.url}/files/down.png failed 4 times; last: HTTP 504"
    assert waits == [0.5, 1.0, 2.0]
    assert list((tmp_path / "cache").iterdir()) == []  # no partial file left behind


def test_a_connection_error_is_retried_and_reported_without_the_query(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    waits: list[float] = []

    with pytest.raises(SampleError) as caught:
        ImageDownloader(tmp_path, sleep=waits.append).fetch(f"http://127.0.0.1:{port}/a.png?sig=hidden")

    assert caught.value.code == "download_failed"
    assert f"downloading http://127.0.0.1:{port}/a.png failed 4 times; last:" in caught.value.message
    assert "hidden" not in caught.value.message
    assert len(waits) == 3


def test_the_cache_key_ignores_the_query_string(tmp_path: Path) -> None:
    downloader = ImageDownloader(tmp_path)

    first = downloader.cache_path("https://bucket.s3.amazonaws.com/a/b.JPG?X-Amz-Signature=1&X-Amz-Expires=60")
    again = downloader.cache_path("https://bucket.s3.amazonaws.com/a/b.JPG?X-Amz-Signature=2#part")
    other = downloader.cache_path("https://other.s3.amazonaws.com/a/b.JPG?X-Amz-Signature=1")

    assert first == again != other
    assert first.parent == tmp_path and first.suffix == ".jpg"


def test_without_query_drops_the_query_fragment_and_user_info() -> None:
    assert without_query("https://u:p@host:8443/a%20b/c.png?sig=1#x") == "https://host:8443/a%20b/c.png"


def test_a_failed_renewal_skips_only_its_task(
    stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "live_0000000000000000deadbeefdeadbeef"
    monkeypatch.setenv(KEY_VARIABLE, wrong)
    stand_in.echo_key = True
    expiring, _ = _expiring_segment_task(stand_in, tmp_path)
    export = write_json_list(tmp_path / "export.json", [expiring, *_add_box_tasks(stand_in, tmp_path, 1)])
    output = tmp_path / "out"

    result = convert("-a", export, "--download-images", "--scale-api-url", f"{stand_in.url}/v1", "-o", output)

    assert result.exit_code == 0, result.stderr
    assert len(records_by_source_id(output)) == 1
    (skipped,) = load_report(output)["skipped"]
    assert skipped["code"] == "expired_url"
    assert "fetching it again failed: Scale AI at" in skipped["reason"]
    assert "the API key was not accepted" in skipped["reason"]
    assert_secrets_nowhere([wrong], output, result)
