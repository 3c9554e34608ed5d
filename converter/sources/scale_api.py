"""The part of Scale AI's API that pulling a project needs, through Scale's own `scaleapi` client.

- Tasks: `ScaleClient.get_tasks`, which pages through `GET /v1/tasks` by `next_token`
  until `has_more` is false. It is asked for `status=completed` only (the only tasks
  converted, so pending and canceled ones are never downloaded), the project, one batch
  per call (the client takes one), and the date filters, which the client sends as
  `start_time` / `end_time`. The caller applies the date filters again to each task's
  `created_at`, so the rule is the converter's own whatever the server's edge handling.
- One task: `ScaleClient.get_task` (`GET /v1/task/{id}`), for fresh signed links when
  the ones in hand have expired.

The API key is handed to the client, which sends it as the HTTP Basic user name, and
goes nowhere else: every `ScaleApiError` message goes through `scrub`, which removes the
key (a `Secret`, so registered) raw, in base64 as the Basic header carries it (`key:`),
and in pieces (a server may quote what it refused, and long details are shortened),
an `--scale-api-url` with user info is refused (it is shown in messages),
client exceptions are not chained (`from None`, so no traceback shows their locals),
and the client's `Task` objects are unwrapped at once, because their repr is the whole
task, signed URLs included. `scaleapi` is imported on first use: it takes most of a
second to import, which conversions of export files need not pay.
Failures raise `ScaleApiError`, a run failure (exit code 1), not a usage error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from converter.core.secret import Secret, refuse_url_credentials, scrub
from converter.errors import ConverterError, UsageError

DEFAULT_API_URL = "https://api.scale.com/v1"  # the client's own default, named here for messages
CLIENT_SOURCE = "dataset-converter"  # appended to the client's User-Agent
_MAX_DETAIL_CHARS = 300

T = TypeVar("T")


class ScaleApiError(ConverterError):
    """Scale AI's API could not be reached, refused the key, or answered something unusable.

    The message is scrubbed here, once, so that no message built below can quote a credential.
    """

    def __init__(self, message: str) -> None:
        super().__init__(scrub(message))


class ScaleApi:
    """Reads tasks of one Scale AI account; safe to share between threads."""

    def __init__(self, api_key: Secret, api_url: str | None = None) -> None:
        if api_url is not None:
            refuse_url_credentials(api_url, "--scale-api-url")
            if urlsplit(api_url).scheme not in ("http", "https"):
                raise UsageError(f"--scale-api-url must be an http:// or https:// URL, got {scrub(repr(api_url))}")
        self._api_key = api_key
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        self._client: Any = None
        self._lock = threading.Lock()

    def completed_tasks(
        self,
        project: str,
        batches: Iterable[str] = (),
        created_after: str | None = None,
        created_before: str | None = None,
    ) -> list[dict[str, Any]]:
        """Every completed task of `project` (of each of `batches`, if any), created in [after, before)."""
        tasks: list[dict[str, Any]] = []
        selected: list[str | None] = [*dict.fromkeys(batches)] or [None]  # None: the whole project
        for batch in selected:
            what = f"the tasks of project {project!r}" + (f", batch {batch!r}" if batch else "")
            tasks.extend(self._call(self._completed_tasks, what, project, batch, created_after, created_before))
        return tasks

    def task(self, task_id: str) -> dict[str, Any]:
        """One task as the API has it now (fresh signed links)."""
        return self._call(self._task, f"task {task_id}", task_id)

    def _completed_tasks(
        self, project: str, batch: str | None, created_after: str | None, created_before: str | None
    ) -> list[dict[str, Any]]:
        from scaleapi.tasks import TaskStatus

        pages = self._scale().get_tasks(
            project_name=project,
            batch_name=batch,
            status=TaskStatus.Completed,
            created_after=created_after,
            created_before=created_before,
        )
        return [task.as_dict() for task in pages]

    def _task(self, task_id: str) -> dict[str, Any]:
        task: dict[str, Any] = self._scale().get_task(task_id).as_dict()
        return task

    def _scale(self) -> Any:
        """The client, made on first use (importing `scaleapi` takes most of a second)."""
        with self._lock:
            if self._client is None:
                from scaleapi import ScaleClient

                self._client = ScaleClient(self._api_key.reveal(), source=CLIENT_SOURCE, api_instance_url=self.api_url)
            return self._client

    def _call(self, request: Callable[..., T], what: str, *arguments: Any) -> T:
        """Run a client call, turning its exceptions into `ScaleApiError` messages free of the key."""
        from scaleapi.exceptions import ScaleException

        try:
            return request(*arguments)
        except ScaleException as error:
            raise self._failure(error, what) from None
        except (KeyError, TypeError, ValueError) as error:  # a page without `docs`, `has_more`, ...
            raise ScaleApiError(
                f"Scale AI at {self.api_url} answered a request for {what} with something unexpected "
                f"({type(error).__name__}: {self._scrub(str(error))})"
            ) from None

    def _failure(self, error: Any, what: str) -> ScaleApiError:
        code = getattr(error, "code", None)
        detail = self._scrub(str(getattr(error, "message", "") or ""))
        if code is None:
            return ScaleApiError(f"cannot reach Scale AI at {self.api_url} for {what}: {detail}")
        where = f"Scale AI at {self.api_url} answered a request for {what} with HTTP {code}"
        if code == 401:
            return ScaleApiError(
                f"{where}: the API key was not accepted; check SCALE_API_KEY or the file --scale-api-key-path names"
            )
        return ScaleApiError(f"{where}: {detail}" if detail else where)

    @staticmethod
    def _scrub(text: str) -> str:
        """Scrubbed before it is shortened, so that the cut cannot leave a piece too short to recognize."""
        return scrub(text)[:_MAX_DETAIL_CHARS]
