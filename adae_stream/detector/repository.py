"""A detector repository in the shape of Triton's model repository: ``DIR/<name>/<version>/``.

Each version directory holds one detector as ``save_detector`` writes it; versions are positive integers.
Dot-directories are never read: ``save_detector`` writes into a hidden temp directory and renames it into
place, so a version appears whole or not at all (Triton's docs warn that a poll may otherwise see half a
copy). A version directory without ``detector.json`` is incomplete (a copy still under way) and skipped.

``DIR/<name>/policy.yaml`` may say ``serve: N`` (pin a version; else the highest version that loads serves),
``shadow: M`` (score M on the same instances, for the metrics alone) and ``publish: corrected|no_defense``
(the prediction answers carry). Promotion, rollback and the defense are one edit of that file, by a person
or by the decision-maker (decisions/decider.py), which also keeps ``auto``, ``probation`` and its audit
trail ``decisions`` there; the replicas read only the first three.

Scanning and the policy are plain filesystem code (no TensorFlow); loading goes through a ``load``
callable, so the lifecycle rules are tested without a model. A version that fails to load is logged and
counted once (until its files change) and never replaces the version that serves.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from adae_stream.errors import ConfigError
from adae_stream.files import replace_text
from adae_stream.scoring import CORRECTED, PUBLISHABLE, ServingDetector, StreamScorer

log = logging.getLogger(__name__)

POLICY_FILE = "policy.yaml"
COMPLETE_MARKER = "detector.json"  # written last into the temp dir before save_detector's rename
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
VERSION = re.compile(r"^[1-9][0-9]{0,8}$")


class RepositoryError(ConfigError):
    """The repository itself is unusable (missing, not a directory, too many detectors): a start-up error."""


POLICY_KEYS = ("serve", "shadow", "publish", "auto", "probation", "decisions")


@dataclass(frozen=True)
class Policy:
    serve: int | None = None
    shadow: int | None = None
    publish: str = CORRECTED  # one of PUBLISHABLE
    auto: bool = True  # false: the decision-maker leaves this detector alone
    probation: dict | None = None  # the decision-maker's: {"replaced": N, ...} while N shadows a promotion
    decisions: list = field(default_factory=list)  # the decision-maker's audit trail, newest last


def read_policy(detector_dir: Path) -> Policy:
    """The detector's policy.yaml; a malformed one raises ValueError with the reason (the caller keeps
    what serves)."""
    file = detector_dir / POLICY_FILE
    if not file.exists():
        return Policy()
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{file}: unreadable: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or set(data) - set(POLICY_KEYS):
        raise ValueError(f"{file}: expected a mapping of {', '.join(POLICY_KEYS)}")
    values: dict = {}
    for key in ("serve", "shadow"):
        value = data.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{file}: '{key}' must be a positive version number, got {value!r}")
        values[key] = value
    publish = data.get("publish", CORRECTED)
    if publish not in PUBLISHABLE:
        raise ValueError(f"{file}: 'publish' must be one of {', '.join(PUBLISHABLE)}, got {publish!r}")
    auto = data.get("auto", True)
    if not isinstance(auto, bool):
        raise ValueError(f"{file}: 'auto' must be true or false, got {auto!r}")
    probation, decisions = data.get("probation"), data.get("decisions") or []
    if probation is not None and not isinstance(probation, dict):
        raise ValueError(f"{file}: 'probation' is the decision-maker's mapping, got {probation!r}")
    if not isinstance(decisions, list):
        raise ValueError(f"{file}: 'decisions' is the decision-maker's list, got {decisions!r}")
    return Policy(**values, publish=publish, auto=auto, probation=probation, decisions=decisions)


def policy_text(detector_dir: Path) -> str | None:
    """The policy file as it is now (None: absent), to tell whether someone changed it since."""
    try:
        return (detector_dir / POLICY_FILE).read_text()
    except FileNotFoundError:
        return None


def render_policy(policy: Policy, header: str) -> str:
    """policy.yaml's text for ``policy``, under a comment line."""
    data = {k: getattr(policy, k) for k in POLICY_KEYS}
    data = {k: v for k, v in data.items() if v is not None and v != [] and not (k == "auto" and v is True)}
    return f"# {header}\n" + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120)


def replace_policy(detector_dir: Path, text: str, expected: str | None) -> bool:
    """Replace policy.yaml with ``text`` atomically, unless it changed from ``expected`` since it was read:
    then nothing is written and False returned, so a person's edit is never lost."""
    if policy_text(detector_dir) != expected:
        return False
    replace_text(detector_dir / POLICY_FILE, text)
    return True


def scan(root: Path) -> dict[str, dict[int, Path]]:
    """{name: {version: directory}} of the complete versions; hidden and malformed names are left out."""
    out: dict[str, dict[int, Path]] = {}
    for detector_dir in sorted(p for p in root.iterdir() if p.is_dir() and NAME.match(p.name)):
        versions = {}
        for version_dir in detector_dir.iterdir():
            if version_dir.is_dir() and VERSION.match(version_dir.name) and (version_dir / COMPLETE_MARKER).is_file():
                versions[int(version_dir.name)] = version_dir
        out[detector_dir.name] = dict(sorted(versions.items()))
    return out


def next_version(root: Path, name: str) -> int:
    """The version number a new detector of ``name`` gets: one above every version directory there,
    complete or not, so a copy under way is never overwritten."""
    detector_dir = root / name
    taken = [int(p.name) for p in detector_dir.iterdir() if VERSION.match(p.name)] if detector_dir.is_dir() else []
    return max(taken, default=0) + 1


def _signature(version_dir: Path) -> tuple[int, int]:
    """Changes when a version is rewritten in place (a new detector.json), so it is loaded again."""
    stat = (version_dir / COMPLETE_MARKER).stat()
    return stat.st_mtime_ns, stat.st_size


@dataclass
class _Loaded:
    version: int
    signature: tuple[int, int]
    scorer: StreamScorer


class DetectorRepository:
    """The repository's serving state, refreshed by ``refresh()`` (a poll, SIGHUP, or the start).

    ``refresh`` loads and warms up what it needs on the calling thread (the watcher's, never the loop's),
    then publishes the new set; the loop picks it up between batches through ``changed()``.
    """

    def __init__(
        self,
        root: str | Path,
        load: Callable[[Path], StreamScorer],
        max_detectors: int = 32,
        on_load_failure: Callable[[str], None] = lambda name: None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise RepositoryError(f"config key 'detector.repository': {self.root} is not a directory")
        self._load = load
        self.max_detectors = max_detectors
        self._on_load_failure = on_load_failure
        self._loaded: dict[str, dict[int, _Loaded]] = {}
        self._failed: dict[tuple[str, int], object] = {}  # (name, version) -> what failed (files, policy): once
        self._serving: dict[str, ServingDetector] = {}
        self._published: Mapping[str, ServingDetector] | None = None
        self._lock = threading.Lock()  # one refresh at a time (poll thread, SIGHUP, start)
        self._handoff = threading.Lock()  # held for an assignment only: the loop never waits on a load

    # ------------------------------------------------------------------ the stream's view (DetectorSource)
    def current(self) -> Mapping[str, ServingDetector]:
        return dict(self._serving)

    def changed(self) -> Mapping[str, ServingDetector] | None:
        with self._handoff:
            published, self._published = self._published, None
        return published

    # ------------------------------------------------------------------ lifecycle
    def refresh(self) -> bool:
        """Scan, load what is new, pick what serves and shadows. True if that changed."""
        with self._lock:
            found = scan(self.root)
            if len(found) > self.max_detectors:
                log.error(
                    "detector repository %s holds %d detectors, over detector.max_detectors=%d: keeping the %d "
                    "in name order",
                    self.root,
                    len(found),
                    self.max_detectors,
                    self.max_detectors,
                )
                found = dict(list(found.items())[: self.max_detectors])
            serving: dict[str, ServingDetector] = {}
            for name, versions in found.items():
                chosen = self._choose(name, versions)
                if chosen is not None:
                    serving[name] = chosen
            self._unload(serving)
            if _same(serving, self._serving):
                return False
            for name, det in serving.items():
                before = self._serving.get(name)
                if before is None or (before.version, before.shadow_version, before.publish) != (
                    det.version,
                    det.shadow_version,
                    det.publish,
                ):
                    log.info(
                        "detector %s: version %d serves%s, answers publish %s (was %s)",
                        name,
                        det.version,
                        f", version {det.shadow_version} shadows" if det.shadow_version else "",
                        det.publish,
                        "not served" if before is None else f"version {before.version}",
                    )
            for name in set(self._serving) - set(serving):
                log.warning("detector %s: no version left to serve; its traffic is unrouted", name)
            self._serving = serving
            with self._handoff:
                self._published = dict(serving)
            return True

    def _choose(self, name: str, versions: dict[int, Path]) -> ServingDetector | None:
        before = self._serving.get(name)
        try:
            policy = read_policy(self.root / name)
        except ValueError as exc:
            self._fail_once(name, 0, ("policy", str(exc)), f"policy ignored, nothing changes: {exc}")
            return before if before is not None and before.version in versions else None
        self._failed.pop((name, 0), None)  # the policy reads again: a later problem with it is reported anew
        candidates = [policy.serve] if policy.serve is not None else sorted(versions, reverse=True)
        serve = next((v for v in candidates if v in versions and self._get(name, v, versions[v])), None)
        if serve is None:
            if policy.serve is not None and policy.serve not in versions:
                self._fail_once(name, policy.serve, "absent", f"policy serves version {policy.serve}, which is absent")
            if before is not None and before.version in versions:  # a failed load keeps the old version serving
                serve = before.version
            else:
                return None
        shadow = policy.shadow
        if shadow is not None and (
            shadow == serve or shadow not in versions or not self._get(name, shadow, versions[shadow])
        ):
            if shadow != serve and shadow not in versions:
                self._fail_once(name, shadow, "absent", f"policy shadows version {shadow}, which is absent")
            shadow = None
        loaded = self._loaded[name]
        return ServingDetector(
            name,
            serve,
            loaded[serve].scorer,
            shadow,
            loaded[shadow].scorer if shadow is not None else None,
            policy.publish,
        )

    def _get(self, name: str, version: int, path: Path) -> bool:
        """Whether (name, version) is loaded now, loading it if it is new or changed on disk."""
        try:
            signature = _signature(path)
        except OSError:
            return False  # removed between the scan and now
        held = self._loaded.setdefault(name, {}).get(version)
        if held is not None and held.signature == signature:
            return True
        if self._failed.get((name, version)) == signature:
            return False  # failed before with these very files: not retried, not logged again
        try:
            scorer = self._load(path)
        except Exception as exc:  # any way a version can be broken: it never replaces what serves
            self._fail_once(name, version, signature, f"{type(exc).__name__}: {exc}")
            return False
        self._failed.pop((name, version), None)
        self._loaded[name][version] = _Loaded(version, signature, scorer)
        log.info("detector %s version %d loaded from %s (detector_id %s)", name, version, path, scorer.info.detector_id)
        return True

    def _fail_once(self, name: str, version: int, what: object, message: str) -> None:
        if self._failed.get((name, version)) == what:
            return
        self._failed[(name, version)] = what
        log.error("detector %s version %d could not be loaded (the serving version stays): %s", name, version, message)
        self._on_load_failure(name)

    def _unload(self, serving: Mapping[str, ServingDetector]) -> None:
        """Versions neither serving nor shadowing are dropped, so their memory can go (the loop drops its
        own references when it takes the new set)."""
        for name in list(self._loaded):
            keep = {serving[name].version, serving[name].shadow_version} if name in serving else set()
            for version in list(self._loaded[name]):
                if version not in keep:
                    del self._loaded[name][version]
                    log.info("detector %s version %d unloaded", name, version)
            if not self._loaded[name]:
                del self._loaded[name]


def _same(a: Mapping[str, ServingDetector], b: Mapping[str, ServingDetector]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].scorer is b[k].scorer
        and a[k].shadow is b[k].shadow
        and a[k].version == b[k].version
        and a[k].publish == b[k].publish
        for k in a
    )


class RepositoryWatcher:
    """Refreshes a repository every ``poll_s`` seconds and whenever ``trigger()`` is called (SIGHUP)."""

    def __init__(self, repository: DetectorRepository, poll_s: float) -> None:
        self.repository = repository
        self.poll_s = poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="adae-repository", daemon=True)

    def start(self) -> RepositoryWatcher:
        self._thread.start()
        return self

    def trigger(self) -> None:
        """Safe from a signal handler: only sets an event."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.repository.refresh()
            except Exception:  # a refresh that breaks keeps what serves; the next poll tries again
                log.exception("refreshing the detector repository %s failed", self.repository.root)
