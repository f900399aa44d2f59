"""A PACS over DICOMweb (dicomweb-client): a study's image series listed (QIDO-RS) and pulled into a
local folder (WADO-RS), a DICOM SEG stored back (STOW-RS). Credentials come from the environment (``DICOMWEB_USERNAME``,
``DICOMWEB_PASSWORD``) or a netrc file, never from the command line, and no URL is kept with them."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from common.errors import InputError, first_line

MODALITY, SERIES_UID, SERIES_NUMBER = "00080060", "0020000E", "00200011"
NON_IMAGE_MODALITIES = ("SEG", "SR", "RTSTRUCT", "PR", "KO")


def is_dicomweb(source: str) -> bool:
    return str(source).lower().startswith(("http://", "https://"))


def checked_url(url: str) -> str:
    """``url`` as given; :class:`InputError` when it carries credentials (they would end up in
    shell histories, process lists and reports)."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise InputError(f"{parts.scheme}://{parts.hostname}{parts.path}: credentials in the URL are refused; "
                         "set DICOMWEB_USERNAME and DICOMWEB_PASSWORD, or use a netrc file")
    return url.rstrip("/")


def client(url: str):
    """A ``DICOMwebClient`` of ``url``: basic authentication from ``DICOMWEB_USERNAME`` and
    ``DICOMWEB_PASSWORD`` when set, else whatever netrc gives (requests reads it). A failed request
    is tried 3 times over about 3 s (the client's default, 5 times over about 30 s, also retries a
    server that is down)."""
    from dicomweb_client.api import DICOMwebClient
    from dicomweb_client.session_utils import create_session, create_session_from_user_pass

    user, password = os.environ.get("DICOMWEB_USERNAME"), os.environ.get("DICOMWEB_PASSWORD")
    session = create_session_from_user_pass(user, password) if user and password else create_session()
    web = DICOMwebClient(checked_url(url), session=session)
    web.set_http_retry_params(max_attempts=3, wait_exponential_multiplier=500)
    return web


def _value(item: dict, tag: str) -> str | None:
    values = item.get(tag, {}).get("Value") or [None]
    return None if values[0] is None else str(values[0])


def _calling(url: str, action: str, call):
    """``call()``, its network and HTTP failures as one-line :class:`InputError` naming ``url``."""
    import requests

    try:
        return call()
    except requests.exceptions.ConnectionError as err:
        raise InputError(f"{url}: cannot reach the DICOMweb server to {action} ({first_line(err)[:200]})") from err
    except requests.exceptions.HTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        raise InputError(f"{url}: the DICOMweb server answered HTTP {status} to {action}") from err


def image_series(url: str, study: str) -> dict[str, str]:
    """The image series of ``study`` on the DICOMweb server at ``url`` (QIDO-RS): UID -> a short
    description (modality, series number); segmentations, reports and the like are left out.

    Raises:
        InputError: the server cannot be reached, or the study does not exist.
    """
    web = client(url)
    found = _calling(url, f"search study {study}", lambda: web.search_for_series(study_instance_uid=study))
    if not found:
        raise InputError(f"{url}: no study {study} on the server")
    return {_value(s, SERIES_UID): f"{_value(s, MODALITY)}, series {_value(s, SERIES_NUMBER)}"
            for s in found if _value(s, MODALITY) not in NON_IMAGE_MODALITIES}


def retrieve_series(url: str, study: str, series: str, folder: Path) -> list[Path]:
    """Retrieve the series ``series`` of ``study`` from the DICOMweb server at ``url`` (WADO-RS)
    into ``folder``, one file per instance; return the files."""
    web = client(url)
    datasets = _calling(url, f"retrieve series {series}", lambda: web.retrieve_series(study, series))
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for index, ds in enumerate(datasets):
        path = folder / f"{index:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def store(url: str, path: Path) -> None:
    """Store the DICOM file at ``path`` on the server at ``url`` (STOW-RS)."""
    import pydicom

    web = client(url)
    _calling(url, f"store {path.name}", lambda: web.store_instances(datasets=[pydicom.dcmread(path)]))
