"""``make label-pacs``: the annotator's whole stack on this machine. Debian's Orthanc with its DICOMweb
plugin on loopback, the task's held-out scans loaded into it as DICOM series, and MONAI Label
serving every bundle that has weights with that PACS as its studies and the OHIF viewer it ships;
the viewer's address is printed, and both servers stop together (Ctrl-C, or either one failing).

    python label_app/pacs.py --dataset_dir data/mni152 --work_dir data/label_pacs/mni152 [--label_port 8000]

Orthanc 1.10 cannot bind loopback only: it refuses every request that does not come from this
machine (``RemoteAccessAllowed`` false) and asks every one for a password made for this session,
which MONAI Label gets from its environment (``MONAI_LABEL_DICOMWEB_USERNAME`` / ``_PASSWORD``);
MONAI Label listens on 127.0.0.1 only. The PACS's storage stays in ``work_dir``, so labels stored
as DICOM SEG are there next time.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from base64 import b64encode
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from common.errors import InputError, report_input_errors_briefly  # noqa: E402
from common.workflow.data import describe_dataset  # noqa: E402

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER = "annotator"
START_TIMEOUT = 300


def last_error(log: Path) -> str:
    """The last line of ``log`` that reports an error or exception (else its last line), to name in one line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.is_file() else []
    found = [line for line in lines if "error" in line.lower() or "exception" in line.lower()]
    return (found or lines or ["(empty log)"])[-1][:300]


def stop(process: subprocess.Popen) -> None:
    """Stop a server started in its own session, its whole process group: SIGTERM, then SIGKILL after 30 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class Orthanc:
    """Debian's Orthanc with its DICOMweb plugin on ``port``, storage in ``root/storage``, no DICOM
    port, requests from other machines refused and a password on every request.

    Args:
        root: its folder (configuration, storage, log).
        port: its HTTP port.
        user: the user name.
        password: the password (default: a new one).
    """

    def __init__(self, root: Path, port: int, user: str = USER, password: str | None = None) -> None:
        if not (Path(ORTHANC).is_file() and DICOMWEB_PLUGIN.is_file()):
            raise InputError(f"{ORTHANC}: Orthanc and its DICOMweb plugin are not installed; run make pacs-install")
        (root / "storage").mkdir(parents=True, exist_ok=True)
        self.port, self.user, self.password = port, user, password or secrets.token_urlsafe(16)
        self.url = f"http://127.0.0.1:{port}"
        config = {
            "Name": "attention-bundles-pacs", "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "storage"),
            "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True, "RegisteredUsers": {user: self.password},
            "Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        config_file = root / "orthanc.json"
        config_file.write_text(json.dumps(config))
        config_file.chmod(0o600)
        self.log = root / "orthanc.log"
        with open(self.log, "w") as out:
            self.process = subprocess.Popen([ORTHANC, str(config_file)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def rest(self, path: str, data: bytes | None = None, method: str = "GET", timeout: float = 60) -> bytes:
        token = b64encode(f"{self.user}:{self.password}".encode()).decode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers={"Authorization": f"Basic {token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()

    def wait(self, timeout: float = 60) -> None:
        """Return once Orthanc answers; :class:`InputError` with its log when it exits or stays silent."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise InputError(f"{self.url}: Orthanc stopped at start (port {self.port} in use?); its log {self.log}: {last_error(self.log)}")
            try:
                self.rest("/system", timeout=5)
                return
            except (urllib.error.URLError, OSError):  # not up yet, or another program on the port
                time.sleep(0.5)
        raise InputError(f"{self.url}: Orthanc did not answer within {timeout:.0f} s; its log {self.log}: {last_error(self.log)}")

    def upload(self, files: list[Path]) -> None:
        for file in files:
            self.rest("/instances", file.read_bytes(), "POST")

    def study_uids(self) -> set[str]:
        """The StudyInstanceUIDs stored."""
        return {json.loads(self.rest(f"/studies/{study}"))["MainDicomTags"]["StudyInstanceUID"] for study in json.loads(self.rest("/studies"))}

    def stop(self) -> None:
        stop(self.process)


def load_task(pacs: Orthanc, dataset_dir: Path, work_dir: Path) -> list[str]:
    """Each held-out (validation or test) scan of the data set as a DICOM series of its own study in
    the PACS, once: a study already stored is kept, with what annotators saved to it. Returns the
    study UIDs."""
    sys.path.insert(0, str(Path(__file__).parent))
    from dicom_series import write_series

    dataset = describe_dataset(dataset_dir)
    cases = dataset.validation or dataset.test or dataset.training[-1:]
    stored, studies = pacs.study_uids(), []
    for case in cases:
        if not isinstance(case.image, str):
            raise InputError(f"{case.image[0]}: case {case.id!r} has one file per channel; a DICOM series is one image")
        study = f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, f'attention-bundles:{Path(case.image).resolve()}').int}"  # same scan, same study
        studies.append(study)
        if study not in stored:
            modality = "CT" if (dataset.channel_names or [""])[0].upper() == "CT" else "MR"
            _, files = write_series(case.image, work_dir / "series" / case.id, study, case.id.upper(), modality, f"{case.id} ({dataset.root.name})")
            pacs.upload(files)
    return studies


def served_bundles(bundles: Path) -> list[str]:
    """The bundles with weights; :class:`InputError` when none has any, naming how to train one."""
    found = sorted(p.name for p in bundles.iterdir() if (p / "configs" / "metadata.json").is_file())
    weighted = [name for name in found if (bundles / name / "models" / "model.pt").is_file()]
    for name in sorted(set(found) - set(weighted)):
        print(f"{name}: not served for inference, no {bundles / name / 'models' / 'model.pt'} (make demo BUNDLE={name})")
    if not weighted:
        raise InputError(f"{bundles}: no bundle has weights to serve; train one first, e.g. make demo BUNDLE=unetr")
    return weighted


def wait_for_label(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise InputError(f"{url}: MONAI Label stopped at start; its log {log}: {last_error(log)}")
        try:
            urllib.request.urlopen(f"{url}/info/", timeout=10).read()
            return
        except (urllib.error.URLError, OSError):
            time.sleep(2)
    raise InputError(f"{url}: MONAI Label did not answer within {START_TIMEOUT} s; its log {log}: {last_error(log)}")


def serve(dataset_dir: str, work_dir: str, label_port: int = 8000, orthanc_port: int = 8042, bundles: str = str(REPO_ROOT / "bundles")) -> None:
    """Start Orthanc and MONAI Label for the annotators (see the module's docstring), print where
    the viewer is, and keep both running until Ctrl-C or until one of them stops."""
    work, bundle_dir = Path(work_dir).absolute(), Path(bundles).absolute()
    served = served_bundles(bundle_dir)
    pacs = Orthanc(work / "orthanc", orthanc_port)
    label = None
    try:
        pacs.wait()
        studies = load_task(pacs, Path(dataset_dir), work)
        url = f"http://127.0.0.1:{label_port}"
        log = work / "monailabel.log"
        env = {**os.environ, "MONAI_LABEL_DICOMWEB_USERNAME": pacs.user, "MONAI_LABEL_DICOMWEB_PASSWORD": pacs.password,
               "MONAI_LABEL_DICOMWEB_CACHE_PATH": str(work / "cache")}
        command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(REPO_ROOT / "label_app"),
                   "--studies", f"{pacs.url}/dicom-web", "--host", "127.0.0.1", "--port", str(label_port),
                   "--conf", "bundles", str(bundle_dir), "--conf", "models", ",".join(served)]
        with open(log, "w") as out:
            label = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env, start_new_session=True)
        wait_for_label(label, url, log)
        print(f"viewer (OHIF): {url}/ohif/  (open the study, choose MONAI Label, Run)\n"
              f"bundles served: {', '.join(served)}\nstudies: {', '.join(studies)}\n"
              f"PACS (Orthanc): {pacs.url}  user {pacs.user}, password in {work / 'orthanc' / 'orthanc.json'}\n"
              f"logs: {pacs.log}, {log}\nCtrl-C stops both.", flush=True)
        while pacs.process.poll() is None and label.poll() is None:
            time.sleep(1)
        stopped = ("Orthanc", pacs.log) if pacs.process.poll() is not None else ("MONAI Label", log)
        raise InputError(f"{stopped[0]} stopped; its log {stopped[1]}: {last_error(stopped[1])}")
    except KeyboardInterrupt:
        print("stopping MONAI Label and Orthanc")
    finally:
        if label is not None:
            stop(label)
        pacs.stop()


if __name__ == "__main__":
    import fire

    report_input_errors_briefly()
    fire.Fire(serve)
