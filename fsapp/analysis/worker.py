"""The analysis worker: a separate, low-priority process that empties the queue.

The daemon is one gevent process: minutes of audio through a voice detector in its
event loop would stall every live call. So ``fsapp serve`` starts ``[analysis]
workers`` processes (``fsapp analyse --pending --follow``, niced by ``nice``); each
claims one queued call at a time from the database under a lease, analyses its
recording, stores the figures and flags, and runs the reviewer's notification for a
flagged call. The daemon only queues (one INSERT as the call is journaled) and never
waits for them. A worker ends after its current call on SIGTERM, and by itself when
the daemon that started it is gone.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from fsapp.analysis import flags, metrics, transcribe, vad
from fsapp.config import AnalysisConfig, Config
from fsapp.notify import notify_reviewer
from fsapp.store import StorageError, Store


def settings(cfg: AnalysisConfig) -> vad.VadSettings:
    return vad.VadSettings(mode=cfg.vad_mode, frame_ms=cfg.frame_ms, min_speech_ms=cfg.min_speech_ms,
                           hangover_ms=cfg.hangover_ms)


def analyse_recording(path: str, customer: str, cfg: AnalysisConfig) -> dict[str, Any]:
    """A recording's figures (``metrics.measure``); raises vad.RecordingError for a missing or bad file."""
    activity = vad.analyse_file(path, customer, settings(cfg))
    return metrics.measure(activity, long_silence_seconds=cfg.long_silence_seconds)


def columns(m: dict[str, Any]) -> dict[str, Any]:
    """``metrics.measure`` output as ``call_analysis`` columns."""
    out = {k: m[k] for k in ("duration_seconds", "silence_seconds", "silence_ratio", "longest_silence_seconds",
                             "long_silences", "overtalk_seconds", "overtalk_count", "agent_customer_ratio",
                             "segments")}
    for side in ("customer", "agent"):
        out[f"{side}_talk_seconds"] = m[side]["talk_seconds"]
        out[f"{side}_share"] = m[side]["share"]
        out[f"{side}_interruptions"] = m[side]["interruptions"]
    return out


def local_path(recording: str, journal_dir: str, cfg: AnalysisConfig) -> str:
    """Where this host finds a recording FreeSWITCH wrote under ``[journal] record_dir``."""
    if cfg.recording_dir and recording.startswith(journal_dir.rstrip("/") + "/"):
        return str(Path(cfg.recording_dir) / recording[len(journal_dir.rstrip("/")) + 1 :])
    return recording


def analyse_row(row: dict[str, Any], config: Config) -> tuple[str, dict[str, Any]]:
    """(state, columns) for one queued call; never raises for a bad recording."""
    cfg = config.analysis
    if not row["recording"]:
        state, figures = "skipped", {}
    else:
        path = local_path(row["recording"], config.journal.record_dir, cfg)
        try:
            m = analyse_recording(path, row["customer_channel"], cfg)
        except vad.RecordingError as exc:
            state, figures = exc.state, {"error": str(exc)}
        else:
            state, figures = "done", columns(m)
            figures["overtalk_ratio"] = m["overtalk_ratio"]
            if cfg.transcribe_command:
                figures.update(transcribe.transcribe(cfg.transcribe_command, path, row["customer_channel"],
                                                     row["call_uuid"], cfg.transcribe_timeout_seconds))
    figures["flags"] = ",".join(flags.flags({**row, **figures}, cfg))
    return state, figures


class Worker:
    """Claims and analyses queued calls, one at a time."""

    def __init__(self, config: Config, store: Store, log: Any) -> None:
        self.config = config
        self.store = store
        self.log = log.bind(component="analysis")
        self.name = f"{socket.gethostname()}:{os.getpid()}:analysis"
        self.stopping = False

    def run_once(self, uuid: str = "") -> bool:
        """Analyse the oldest due call (or call ``uuid``), if any; True if there was one."""
        cfg = self.config.analysis
        row = self.store.analysis_claim(self.name, time.time(), cfg.lease_seconds, cfg.max_attempts, uuid)
        if row is None:
            return False
        started = time.process_time()
        try:
            state, figures = analyse_row(row, self.config)
        except Exception as exc:  # noqa: BLE001 - one bad call must not stop the queue
            self.log.exception("analysis_crashed", uuid=row["call_uuid"])
            state, figures = "failed", {"error": f"analysis failed: {exc!r}"[:500]}
        if not self.store.analysis_finish(row["call_uuid"], self.name, state, figures, time.time()):
            self.log.warning("analysis_lease_lost", uuid=row["call_uuid"])
            return True
        self._report(row, state, figures, time.process_time() - started)
        return True

    def _report(self, row: dict[str, Any], state: str, figures: dict[str, Any], cpu: float) -> None:
        uuid = row["call_uuid"]
        names = tuple(f for f in figures.get("flags", "").split(",") if f)
        if state in ("done", "skipped"):
            self.log.info("call_analysed", uuid=uuid, state=state, cpu_seconds=round(cpu, 3),
                          transcript=figures.get("transcript_state", ""))
        else:
            self.log.warning("call_analysis_failed", uuid=uuid, state=state, reason=figures.get("error", ""))
        if figures.get("transcript_state") == "failed":
            self.log.warning("transcribe_failed", uuid=uuid, reason=figures.get("transcript_error", ""))
        if names:
            self.log.warning("call_flagged", uuid=uuid, flags=list(names))
            call = self.store.get_call(uuid) or {"uuid": uuid}
            notify_reviewer(self.config.journal.notify_command, call, self.log, reason="flagged", flags=names)

    def drain(self) -> int:
        """Analyse every due call, then return how many there were."""
        done = 0
        while not self.stopping and self.run_once():
            done += 1
        return done

    def follow(self, parent: int = 0) -> None:
        """Run as a service: poll the queue until SIGTERM (or until process ``parent`` is gone)."""
        signal.signal(signal.SIGTERM, self._stop)
        while not self.stopping and (not parent or os.getppid() == parent):
            try:
                busy = self.run_once()
            except StorageError as exc:
                self.log.error("analysis_storage_failed", reason=str(exc))
                busy = False
            if not busy:
                time.sleep(self.config.analysis.poll_seconds)

    def _stop(self, signum: int, frame: Any) -> None:
        self.stopping = True


def lower_priority(nice: int) -> None:
    if nice:
        try:
            os.nice(nice)
        except OSError:
            pass
