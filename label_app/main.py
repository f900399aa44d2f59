"""MONAI Label app that serves every bundle of the collection, in place, for inference and training.

Start it with ``make label`` (or ``monailabel start_server --app label_app --studies <folder> --host 127.0.0.1``).
It serves loopback only: MONAI Label binds every interface unless told otherwise, and without its
authentication anyone who reaches the port can run training and overwrite labels and weights. A
``--host`` that is not loopback is refused unless MONAI Label's authentication is on
(``MONAI_LABEL_AUTH_ENABLE=true`` with its Keycloak realm, ``MONAI_LABEL_AUTH_REALM_URI``).
Settings, each a ``--conf <key> <value>`` of ``start_server``:

- ``bundles``: folder holding the bundles (default: this repository's ``bundles/``);
- ``models``: ``all`` (default) or a comma-separated list of bundle names;
- ``overrides``: a file name under each bundle's ``configs/`` merged over ``inference.json`` and
  ``train.json`` (default ``none``).

``--studies`` may be a PACS instead of a folder: the root of its DICOMweb service (e.g. Orthanc's
``http://127.0.0.1:8042/dicom-web``; credentials in ``MONAI_LABEL_DICOMWEB_USERNAME`` and
``MONAI_LABEL_DICOMWEB_PASSWORD``, never in the URL). The series of the served weights' modality
are listed, pulled into MONAI Label's cache and converted to NIfTI for inference and training; a
label saved as final goes back to the PACS as a DICOM SEG (:class:`PacsDatastore`).

Weights describe themselves: each bundle is served with the classes, channels, spacing,
normalisation and network sizes its ``models/model.pt`` was trained with, and a training round
starts from them with the same settings. Weights load strictly: weights that do not fit the configs
are refused at start with an error naming the file, and that bundle is not served for inference.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from pathlib import Path
from typing import Any

from monailabel.config import settings
from monailabel.datastore.dicom import DICOMwebClientX, DICOMWebDatastore
from monailabel.datastore.local import LocalDatastore
from monailabel.datastore.utils.convert import nifti_to_dicom_seg
from monailabel.datastore.utils.dicom import dicom_web_upload_dcm
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask

from common.bundle import read_overrides
from common.workflow.checkpoints import load_model_weights, trained_settings
from common.cli.dicomweb import checked_url
from common.errors import InputError

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
MONAI_LABEL_DEFAULT_HOST = "0.0.0.0"


def bound_host(argv: list[str]) -> str | None:
    """The address ``monailabel start_server`` binds, from its command line (``--host``/``-i``);
    ``None`` in another process that builds the app (MONAI Label's training subprocess)."""
    if "start_server" not in argv:
        return None
    for index, arg in enumerate(argv):
        if arg in ("--host", "-i") and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--host="):
            return arg.split("=", 1)[1]
    return MONAI_LABEL_DEFAULT_HOST


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_unauthenticated_exposure(host: str | None, auth_enabled: bool) -> None:
    """:class:`InputError` when the server would listen beyond this machine without authentication."""
    if host is not None and not is_loopback(host) and not auth_enabled:
        raise InputError(
            f"--host {host}: the server would accept anyone who can reach it (MONAI Label's default binds every "
            "interface) with no authentication; serve on --host 127.0.0.1 (make label does), or turn on MONAI Label's "
            "authentication (MONAI_LABEL_AUTH_ENABLE=true with a Keycloak realm in MONAI_LABEL_AUTH_REALM_URI)"
        )


def bundle_overrides(folder: Path, overrides_name: str) -> dict[str, Any]:
    """The config keys of ``folder/configs/<overrides_name>`` (``{}`` for ``none``); a missing or
    malformed file is an :class:`InputError` naming it."""
    if overrides_name.lower() == "none":
        return {}
    return read_overrides(folder / "configs" / overrides_name)


class StrictBundleInferTask(BundleInferTask):
    """:class:`BundleInferTask` of one bundle with config ``overrides`` and strict weight loading;
    weights that do not fit the configs leave the task invalid, with an error naming the file.

    Args:
        path: the bundle folder.
        conf: the app's settings.
        overrides: config keys merged over ``inference.json``.
    """

    def __init__(self, path: str, conf: dict[str, str], overrides: dict[str, Any]) -> None:
        self.overrides = overrides
        super().__init__(path, conf, load_strict=True)
        if self.valid and self.network is not None:
            try:
                load_model_weights(self.network, self.path[0])
            except InputError as err:
                logger.error(f"{Path(path).name}: not served for inference: {err}")
                self.valid = False
                return
            class_names = self.bundle_config.get_parsed_content("class_names")
            self.labels = {name.lower(): value for value, name in enumerate(class_names) if value > 0}

    def _load_bundle_config(self, path: str, config: str):
        parser = super()._load_bundle_config(path, config)
        parser.update(self.overrides)
        return parser

    def run_pre_transforms(self, data: dict[str, Any], transforms: list) -> dict[str, Any]:
        """The bundle's pre-processing, with MONAI Label's ``image_path`` string set aside while it
        runs: MONAI's ``Spacingd`` (1.6) copies the image's meta data into every ``image_*`` entry."""
        image_path = data.pop("image_path", None)
        data = super().run_pre_transforms(data, transforms)
        if image_path is not None:
            data["image_path"] = image_path
        return data


class StrictBundleTrainTask(BundleTrainTask):
    """:class:`BundleTrainTask` of one bundle with config ``overrides``, strict loading of the weights
    it starts from, and the settings of the bundle's weights. ``models/model.pt`` is rewritten only
    when the round beats those weights on its validation studies (:class:`common.workflow.checkpoints.BestWeights`).

    Args:
        path: the bundle folder.
        conf: the app's settings.
        overrides: config keys merged over ``train.json`` (the request's epochs, data and device win,
            then these, then the settings of the bundle's weights).
    """

    def __init__(self, path: str, conf: dict[str, str], overrides: dict[str, Any]) -> None:
        self.overrides = overrides
        super().__init__(path, conf, load_strict=True)

    def _partition_datalist(self, datalist: list, request: dict, shuffle: bool = False) -> tuple[list, list | None]:
        """MONAI Label's split, except that validation is never empty: the bundle writes
        ``models/model.pt`` when validation improves, and the default 20% of two studies is none."""
        train, validation = super()._partition_datalist(datalist, request, shuffle)
        if validation == []:
            if len(train) < 2:
                raise InputError(f"{self.bundle_path}: training needs at least 2 studies with final labels "
                                 f"(one for validation), the datastore has {len(train)}")
            train, validation = train[:-1], train[-1:]
            logger.info(f"No study left for validation at this split: validating on {validation[0]['image']}")
        return train, validation

    def _load_checkpoint(self, model_pytorch: str, pretrained: bool, train_handlers: list) -> None:
        if pretrained and os.path.exists(model_pytorch):
            train_handlers.insert(0, {
                "_target_": "common.workflow.checkpoints.StrictCheckpointLoader", "load_path": model_pytorch,
                "load_dict": {"model": "@network"}, "expected": "@trained_with", "map_location": "@device",
            })

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """The round trains with the settings of the bundle's ``models/model.pt`` (the weights it
        serves and, unless the round beats them on its validation studies, keeps). The studies'
        paths go to the config as ``Path`` objects, which MONAI does not parse: a study named like
        an expression (``$...``) or holding ``#`` stays a file name."""
        recorded = trained_settings(Path(self.bundle_path) / "models" / "model.pt")
        for key, value in {**recorded, **self.overrides}.items():
            overrides.setdefault(key, value)
        for key in (self.const.key_train_dataset_data(), self.const.key_validate_dataset_data()):
            if key in overrides:
                overrides[key] = [{k: Path(v) if isinstance(v, str) else v for k, v in item.items()} for item in overrides[key]]
        return overrides


class PacsDatastore(DICOMWebDatastore):
    """MONAI Label's DICOMweb datastore whose final labels go back to the PACS as a DICOM SEG written
    by pydicom-seg (MONAI Label's own writer without dcmqi: MONAI Label would download dcmqi's
    ``itkimage2segimage`` from GitHub when the server starts, and a hospital network or CI has no
    internet). The SEG references the cached series; the label is also kept in the local cache."""

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any], label_id: str = "") -> str:
        if label_tag == DefaultLabelTag.FINAL:
            self.get_image_uri(image_id)
            series_dir = os.path.realpath(os.path.join(self._datastore.image_path(), image_id))
            seg_file = nifti_to_dicom_seg(series_dir, label_filename, label_info.get("label_info"), use_itk=False)
            if not seg_file:
                raise InputError(f"{label_filename}: an empty label; nothing stored on the PACS")
            try:
                seg_series = dicom_web_upload_dcm(seg_file, self._client)
            finally:
                os.unlink(seg_file)
            image_info = self.get_image_info(image_id)
            label_info.update({"SeriesInstanceUID": seg_series, **{k: image_info.get(k) for k in ("Modality", "PatientID", "StudyInstanceUID")}})
        return LocalDatastore.save_label(self, image_id, label_filename, label_tag, label_info)


def reachable(client: DICOMwebClientX, url: str) -> None:
    """:class:`InputError` naming ``url`` when the PACS does not answer a search, or refuses the credentials."""
    import requests

    try:
        client.search_for_studies(limit=1)
    except requests.exceptions.ConnectionError as err:
        raise InputError(f"{url}: the PACS does not answer ({str(err)[:200]}); start it first (make label-pacs starts Orthanc)") from err
    except requests.exceptions.HTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        raise InputError(f"{url}: the PACS answered HTTP {status} to a search (credentials: MONAI_LABEL_DICOMWEB_USERNAME and "
                         "MONAI_LABEL_DICOMWEB_PASSWORD)") from err


def dicom_modality(channel_names: list[str]) -> str:
    """The DICOM modality of weights trained on ``channel_names`` (``CT``, else ``MR``)."""
    return "CT" if channel_names and all(n.upper() == "CT" for n in channel_names) else "MR"


class CollectionApp(MONAILabelApp):
    """Every bundle under the ``bundles`` setting, served for inference (those with weights that fit
    their configs) and training (all)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        refuse_unauthenticated_exposure(bound_host(sys.argv), settings.MONAI_LABEL_AUTH_ENABLE)
        self.bundles_dir = Path(conf.get("bundles", REPO_ROOT / "bundles")).resolve()
        self.overrides_name = conf.get("overrides", "none")
        self.bundles = self._select_bundles(conf.get("models", "all"))
        super().__init__(
            app_dir=app_dir, studies=studies, conf=conf, name="Attention segmentation bundles",
            description=f"Bundles of {self.bundles_dir}, configs with {self.overrides_name}", version="1.0",
        )

    def _select_bundles(self, models: str) -> dict[str, Path]:
        available = {p.name: p for p in sorted(self.bundles_dir.iterdir()) if (p / "configs" / "metadata.json").is_file()}
        if models == "all":
            return available
        names = [name.strip() for name in models.split(",") if name.strip()]
        unknown = [name for name in names if name not in available]
        if unknown:
            raise InputError(f"{self.bundles_dir}: no bundle named {', '.join(unknown)} (there are {', '.join(available)})")
        return {name: available[name] for name in names}

    def _init_dicomweb_datastore(self) -> PacsDatastore:
        """The PACS at ``studies`` (a DICOMweb root): credentials from ``MONAI_LABEL_DICOMWEB_USERNAME``
        and ``MONAI_LABEL_DICOMWEB_PASSWORD`` (refused in the URL); the series listed are those of
        the modality the served weights were trained on (``MONAI_LABEL_DICOMWEB_SEARCH_FILTER``
        overrides it); no dcmqi download."""
        from dicomweb_client.session_utils import create_session_from_user_pass

        url = checked_url(self.studies)
        user, password = settings.MONAI_LABEL_DICOMWEB_USERNAME, settings.MONAI_LABEL_DICOMWEB_PASSWORD
        client = DICOMwebClientX(
            url=url, session=create_session_from_user_pass(user, password) if user and password else None,
            qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX, wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
            stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX,
        )
        reachable(client, url)
        search_filter = settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER
        if "MONAI_LABEL_DICOMWEB_SEARCH_FILTER" not in os.environ:
            modalities = {dicom_modality(trained_settings(f / "models" / "model.pt").get("channel_names", [])) for f in self.bundles.values()}
            search_filter = {"Modality": modalities.pop()} if len(modalities) == 1 else {}
        logger.info(f"PACS {url}: series with {search_filter or 'any modality'}")
        cache = (settings.MONAI_LABEL_DICOMWEB_CACHE_PATH or "").strip() or None
        return PacsDatastore(client=client, search_filter=search_filter, cache_path=cache,
                             fetch_by_frame=settings.MONAI_LABEL_DICOMWEB_FETCH_BY_FRAME, convert_to_nifti=True)

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for name, folder in self.bundles.items():
            weights = folder / "models" / "model.pt"
            if not weights.is_file():
                logger.warning(f"{name}: not served for inference, {weights} does not exist (train it first: make demo BUNDLE={name})")
                continue
            task = StrictBundleInferTask(str(folder), self.conf, bundle_overrides(folder, self.overrides_name))
            if task.is_valid():
                infers[name] = task
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        return {
            name: StrictBundleTrainTask(str(folder), self.conf, bundle_overrides(folder, self.overrides_name))
            for name, folder in self.bundles.items()
        }
