"""Human3.6M in the form VideoPose3D distributes it (SPEC §6), and the published camera parameters.

- `data_3d_h36m.npz`: `positions_3d` is a pickled `{subject: {action: (T, 32, 3)}}`, metres, world frame.
- `data_2d_h36m_<name>.npz`: `positions_2d` is `{subject: {action: [(T, 17, 2)] * 4 cameras}}` in pixels, and
  `metadata` a dict with `num_joints`, `keypoints_symmetry` and (detections only) `layout_name`.

`load_h36m` turns them into per-camera (2D input, 3D target) pairs: targets in the camera frame (`R^T (X - t)`,
R the camera's orientation quaternion, t its position), metres, joint 0 at the origin; inputs normalised as
VideoPose3D does (`x / w * 2 - [1, h / w]`).
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .camera import normalize_screen
from .keypoints import coco_to_h36m, fill_missing

SUBJECTS = {"train": ("S1", "S5", "S6", "S7", "S8"), "test": ("S9", "S11")}
SUBJECTS["all"] = SUBJECTS["train"] + SUBJECTS["test"]

ACTIONS = ("Directions", "Discussion", "Eating", "Greeting", "Phoning", "Photo", "Posing", "Purchases", "Sitting",
           "SittingDown", "Smoking", "Waiting", "WalkDog", "Walking", "WalkTogether")
# Names the original Human3.6M files use for two of them (VideoPose3D renames them when it converts from source).
ACTION_ALIASES = {"TakingPhoto": "Photo", "WalkingDog": "WalkDog"}

NUM_JOINTS_RAW = 32
# The 17 joints (SPEC §2 order) kept from Human3.6M's 32: VideoPose3D's Human36mDataset removes joints
# [4, 5, 9, 10, 11, 16, 20, 21, 22, 23, 24, 28, 29, 30, 31] and keeps the rest in order (checked against
# facebookresearch/VideoPose3D common/h36m_dataset.py, `remove_joints` call, and common/mocap_dataset.py, which
# indexes `positions[:, kept_joints]`). Their 32-joint parents map onto SPEC §2's once the shoulders (17, 25)
# are re-attached to the thorax (13), as VideoPose3D does.
KEPT_JOINTS = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)

# Published Human3.6M camera parameters, as listed in facebookresearch/VideoPose3D common/h36m_dataset.py
# (h36m_cameras_intrinsic_params / h36m_cameras_extrinsic_params). Pixels; the same four cameras, in this
# order, film every subject. `azimuth` is only a viewing hint for visualisation.
CAMERA_INTRINSICS = (
    {"id": "54138969", "center": (512.54150390625, 515.4514770507812),
     "focal_length": (1145.0494384765625, 1143.7811279296875),
     "radial_distortion": (-0.20709891617298126, 0.24777518212795258, -0.0030751503072679043),
     "tangential_distortion": (-0.0009756988729350269, -0.00142447161488235),
     "res_w": 1000, "res_h": 1002, "azimuth": 70},
    {"id": "55011271", "center": (508.8486328125, 508.0649108886719),
     "focal_length": (1149.6756591796875, 1147.5916748046875),
     "radial_distortion": (-0.1942136287689209, 0.2404085397720337, 0.006819975562393665),
     "tangential_distortion": (-0.0016190266469493508, -0.0027408944442868233),
     "res_w": 1000, "res_h": 1000, "azimuth": -70},
    {"id": "58860488", "center": (519.8158569335938, 501.40264892578125),
     "focal_length": (1149.1407470703125, 1148.7989501953125),
     "radial_distortion": (-0.2083381861448288, 0.25548800826072693, -0.0024604974314570427),
     "tangential_distortion": (0.0014843869721516967, -0.0007599993259645998),
     "res_w": 1000, "res_h": 1000, "azimuth": 110},
    {"id": "60457274", "center": (514.9682006835938, 501.88201904296875),
     "focal_length": (1145.5113525390625, 1144.77392578125),
     "radial_distortion": (-0.198384091258049, 0.21832367777824402, -0.008947807364165783),
     "tangential_distortion": (-0.0005872055771760643, -0.0018133620033040643),
     "res_w": 1000, "res_h": 1002, "azimuth": -110},
)

# Per subject, per camera: orientation quaternion (w, x, y, z), camera to world; translation: the camera's
# position in the world frame, millimetres.
CAMERA_EXTRINSICS = {
    "S1": (
        {"orientation": (0.1407056450843811, -0.1500701755285263, -0.755240797996521, 0.6223280429840088),
         "translation": (1841.1070556640625, 4955.28466796875, 1563.4454345703125)},
        {"orientation": (0.6157187819480896, -0.764836311340332, -0.14833825826644897, 0.11794740706682205),
         "translation": (1761.278564453125, -5078.0068359375, 1606.2650146484375)},
        {"orientation": (0.14651472866535187, -0.14647851884365082, 0.7653023600578308, -0.6094175577163696),
         "translation": (-1846.7777099609375, 5215.04638671875, 1491.972412109375)},
        {"orientation": (0.5834008455276489, -0.7853162288665771, 0.14548823237419128, -0.14749594032764435),
         "translation": (-1794.7896728515625, -3722.698974609375, 1574.8927001953125)},
    ),
    "S5": (
        {"orientation": (0.1467377245426178, -0.162370964884758, -0.7551892995834351, 0.6178938746452332),
         "translation": (2097.3916015625, 4880.94482421875, 1605.732421875)},
        {"orientation": (0.6159758567810059, -0.7626792192459106, -0.15728192031383514, 0.1189815029501915),
         "translation": (2031.7008056640625, -5167.93310546875, 1612.923095703125)},
        {"orientation": (0.14291371405124664, -0.12907841801643372, 0.7678384780883789, -0.6110143065452576),
         "translation": (-1620.5948486328125, 5171.65869140625, 1496.43701171875)},
        {"orientation": (0.5920479893684387, -0.7814217805862427, 0.1274748593568802, -0.15036417543888092),
         "translation": (-1637.1737060546875, -3867.3173828125, 1547.033203125)},
    ),
    "S6": (
        {"orientation": (0.1337897777557373, -0.15692396461963654, -0.7571090459823608, 0.6198879480361938),
         "translation": (1935.4517822265625, 4950.24560546875, 1618.0838623046875)},
        {"orientation": (0.6147197484970093, -0.7628812789916992, -0.16174767911434174, 0.11819244921207428),
         "translation": (1969.803955078125, -5128.73876953125, 1632.77880859375)},
        {"orientation": (0.1529948115348816, -0.13529130816459656, 0.7646096348762512, -0.6112781167030334),
         "translation": (-1769.596435546875, 5185.361328125, 1476.993408203125)},
        {"orientation": (0.5916101336479187, -0.7804774045944214, 0.12832270562648773, -0.1561593860387802),
         "translation": (-1721.668701171875, -3884.13134765625, 1540.4879150390625)},
    ),
    "S7": (
        {"orientation": (0.1435241848230362, -0.1631336808204651, -0.7548328638076782, 0.6188824772834778),
         "translation": (1974.512939453125, 4926.3544921875, 1597.8326416015625)},
        {"orientation": (0.6141672730445862, -0.7638262510299683, -0.1596645563840866, 0.1177929937839508),
         "translation": (1937.0584716796875, -5119.7900390625, 1631.5665283203125)},
        {"orientation": (0.14550060033798218, -0.12874816358089447, 0.7660516500473022, -0.6127139329910278),
         "translation": (-1741.8111572265625, 5208.24951171875, 1464.8245849609375)},
        {"orientation": (0.5912848114967346, -0.7821764349937439, 0.12445473670959473, -0.15196487307548523),
         "translation": (-1734.7105712890625, -3832.42138671875, 1548.5830078125)},
    ),
    "S8": (
        {"orientation": (0.14110587537288666, -0.15589867532253265, -0.7561917304992676, 0.619644045829773),
         "translation": (2150.65185546875, 4896.1611328125, 1611.9046630859375)},
        {"orientation": (0.6169601678848267, -0.7647668123245239, -0.14846350252628326, 0.11158157885074615),
         "translation": (2219.965576171875, -5148.453125, 1613.0440673828125)},
        {"orientation": (0.1471444070339203, -0.13377119600772858, 0.7670128345489502, -0.6100369691848755),
         "translation": (-1571.2215576171875, 5137.0185546875, 1498.1761474609375)},
        {"orientation": (0.5927824378013611, -0.7825870513916016, 0.12147816270589828, -0.14631995558738708),
         "translation": (-1476.913330078125, -3896.7412109375, 1547.97216796875)},
    ),
    "S9": (
        {"orientation": (0.15540587902069092, -0.15548215806484222, -0.7532095313072205, 0.6199594736099243),
         "translation": (2044.45849609375, 4935.1171875, 1481.2275390625)},
        {"orientation": (0.618784487247467, -0.7634735107421875, -0.14132238924503326, 0.11933968216180801),
         "translation": (1990.959716796875, -5123.810546875, 1568.8048095703125)},
        {"orientation": (0.13357827067375183, -0.1367100477218628, 0.7689454555511475, -0.6100738644599915),
         "translation": (-1670.9921875, 5211.98583984375, 1528.387939453125)},
        {"orientation": (0.5879399180412292, -0.7823407053947449, 0.1427614390850067, -0.14794869720935822),
         "translation": (-1696.04345703125, -3827.099853515625, 1591.4127197265625)},
    ),
    "S11": (
        {"orientation": (0.15232472121715546, -0.15442320704460144, -0.7547563314437866, 0.6191070079803467),
         "translation": (2098.440185546875, 4926.5546875, 1500.278564453125)},
        {"orientation": (0.6189449429512024, -0.7600917220115662, -0.15300633013248444, 0.1255258321762085),
         "translation": (2083.182373046875, -4912.1728515625, 1561.07861328125)},
        {"orientation": (0.14943228662014008, -0.15650227665901184, 0.7681233882904053, -0.6026304364204407),
         "translation": (-1609.8153076171875, 5177.3359375, 1537.896728515625)},
        {"orientation": (0.5894251465797424, -0.7818877100944519, 0.13991211354732513, -0.14715361595153809),
         "translation": (-1590.738037109375, -3854.1689453125, 1578.017578125)},
    ),
}


def quaternion_to_matrix(q) -> np.ndarray:
    """(w, x, y, z) quaternion (normalised here) -> (3, 3) rotation matrix R with R v = q v q*."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


@dataclass(frozen=True)
class H36MCamera:
    """One Human3.6M camera for one subject. `orientation` (w, x, y, z) rotates camera axes into the world;
    `translation` is the camera centre in the world frame, in metres."""

    id: str
    center: tuple[float, float]
    focal_length: tuple[float, float]
    radial_distortion: tuple[float, float, float]
    tangential_distortion: tuple[float, float]
    res_w: int
    res_h: int
    azimuth: float
    orientation: tuple[float, float, float, float]
    translation: tuple[float, float, float]

    @property
    def rotation(self) -> np.ndarray:
        """(3, 3) camera-to-world rotation matrix of `orientation`."""
        return quaternion_to_matrix(self.orientation)

    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) world points (metres) -> camera frame: R^T (X - t), as VideoPose3D's world_to_camera."""
        points = np.asarray(points, dtype=np.float64)
        # row vectors: (R^T v)^T = v^T R
        return (points - np.asarray(self.translation)) @ self.rotation

    def project(self, points_camera: np.ndarray, distort: bool = True) -> np.ndarray:
        """(..., 3) camera-frame points -> (..., 2) pixels.

        distort=True applies the published radial (k1, k2, k3) and tangential (p1, p2) distortion exactly as
        VideoPose3D's project_to_2d (with its clamp of x/z and y/z to [-1, 1]), which made
        data_2d_h36m_gt.npz; distort=False is the linear pinhole u = f x / z + c.
        """
        points_camera = np.asarray(points_camera, dtype=np.float64)
        z = points_camera[..., 2:3]
        if np.any(z <= 0):
            raise ValueError("every point must be in front of the camera (z > 0) to be projected")
        xy = points_camera[..., :2] / z
        if distort:
            xy = np.clip(xy, -1.0, 1.0)
            r2 = np.sum(xy * xy, axis=-1, keepdims=True)
            k = np.asarray(self.radial_distortion)
            p = np.asarray(self.tangential_distortion)
            radial = 1 + k[0] * r2 + k[1] * r2 ** 2 + k[2] * r2 ** 3
            tangential = np.sum(p * xy, axis=-1, keepdims=True)
            xy = xy * (radial + tangential) + p * r2
        return xy * np.asarray(self.focal_length) + np.asarray(self.center)


def h36m_cameras(subject: str) -> list[H36MCamera]:
    """The four cameras of `subject` (S1, S5, S6, S7, S8, S9 or S11), in the order of the 2D files."""
    if subject not in CAMERA_EXTRINSICS:
        raise ValueError(f"no published camera parameters for subject {subject!r}; "
                         f"known: {', '.join(CAMERA_EXTRINSICS)}")
    return [H36MCamera(id=intr["id"], center=intr["center"], focal_length=intr["focal_length"],
                       radial_distortion=intr["radial_distortion"],
                       tangential_distortion=intr["tangential_distortion"], res_w=intr["res_w"],
                       res_h=intr["res_h"], azimuth=float(intr["azimuth"]), orientation=extr["orientation"],
                       translation=tuple(v / 1000.0 for v in extr["translation"]))
            for intr, extr in zip(CAMERA_INTRINSICS, CAMERA_EXTRINSICS[subject])]


def action_name(action: str) -> str:
    """Human3.6M action without its take number: "Walking 1" -> "Walking", "WalkDog" -> "WalkDog"; the original
    files' "TakingPhoto" / "WalkingDog" become "Photo" / "WalkDog"."""
    base = action.split(" ")[0]
    return ACTION_ALIASES.get(base, base)


def subjects_of(split: str) -> tuple[str, ...]:
    """Subjects of a split: "train" S1 S5 S6 S7 S8, "test" S9 S11, "all" both."""
    if split not in SUBJECTS:
        raise ValueError(f"split must be one of {tuple(SUBJECTS)}, got {split!r}")
    return SUBJECTS[split]


def reduce_joints(positions: np.ndarray) -> np.ndarray:
    """(..., 32, 3) Human3.6M joints -> (..., 17, 3) in SPEC §2 order (VideoPose3D's kept joints)."""
    positions = np.asarray(positions)
    if positions.ndim < 2 or positions.shape[-2] != NUM_JOINTS_RAW:
        raise ValueError(f"positions must have shape (..., {NUM_JOINTS_RAW}, 3), got {positions.shape}")
    return positions[..., list(KEPT_JOINTS), :]


def _open_npz(path: str | os.PathLike, what: str):
    """(path as str, the opened NpzFile). VideoPose3D's files hold pickled dicts, so they are opened with
    allow_pickle; checking the zip signature first keeps np.load from unpickling a bare pickle file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not an .npz archive (not a zip file, or truncated)")
    try:
        return path, np.load(path, allow_pickle=True)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable .npz file: {err}") from err


def _pickled_dict(path: str, data, key: str) -> dict:
    """data[key] as a dict: VideoPose3D saves its dicts as 0-d object arrays."""
    if key not in data.files:
        raise ValueError(f"{path} has no key {key!r} (keys: {', '.join(data.files) or 'none'})")
    try:
        value = data[key]
    except Exception as err:  # a truncated member or a pickle of unknown classes can raise almost anything
        raise ValueError(f"{path}: key {key!r} cannot be read (truncated or corrupt file?): {err}") from err
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype == object:
        value = value.item()
    if not isinstance(value, dict):
        raise ValueError(f"{path}: key {key!r} must hold a dict, got {type(value).__name__}")
    return value


def is_h36m_3d(path: str | os.PathLike) -> bool:
    """Whether the .npz at `path` is a VideoPose3D 3D file (it has a `positions_3d` key); reads only its index."""
    path, data = _open_npz(path, "data file")
    with data:
        return "positions_3d" in data.files


def _pose_array(path: str, where: str, value, joints: tuple[int, ...], dims: int) -> np.ndarray:
    """A (T, J, dims) floating array with J in `joints`, or a ValueError naming the file and the entry."""
    if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.floating):
        kind = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
        raise ValueError(f"{path}: {where} must be a floating-point array, got {kind}")
    if value.ndim != 3 or value.shape[1] not in joints or value.shape[2] != dims or len(value) == 0:
        expected = " or ".join(f"(T, {j}, {dims})" for j in joints)
        raise ValueError(f"{path}: {where} has shape {value.shape}, expected {expected} with T >= 1")
    return value


def load_h36m_3d(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """VideoPose3D's data_3d_h36m.npz -> {subject: {action: (T, 17, 3) float32 metres, world frame}}.

    The 32 Human3.6M joints are reduced to SPEC §2's 17; arrays that already have 17 joints are kept as they are.
    """
    path, data = _open_npz(path, "Human3.6M 3D file")
    with data:
        raw = _pickled_dict(path, data, "positions_3d")
    out = {}
    for subject, actions in raw.items():
        if not isinstance(actions, dict):
            raise ValueError(f"{path}: positions_3d[{subject!r}] must be a dict of actions, "
                             f"got {type(actions).__name__}")
        out[subject] = {}
        for action, positions in actions.items():
            where = f"positions_3d[{subject!r}][{action!r}]"
            positions = _pose_array(path, where, positions, (32, 17), 3)
            finite = np.isfinite(positions).all(axis=-1)
            if not finite.all():  # ground truth has no missing joints: NaN here would turn the metrics to NaN
                t, j = np.argwhere(~finite)[0]
                raise ValueError(f"{path}: {where} holds NaN or Inf positions (first at frame {t}, joint {j})")
            if positions.shape[1] == NUM_JOINTS_RAW:
                positions = reduce_joints(positions)
            out[subject][action] = positions.astype(np.float32)
    return out


def load_h36m_2d(path: str | os.PathLike) -> tuple[dict[str, dict[str, list[np.ndarray]]], dict]:
    """VideoPose3D's data_2d_h36m_<name>.npz -> ({subject: {action: [(T, 17, 2) float32 pixels per camera]}},
    metadata). Keypoints in the "coco" layout (e.g. the Detectron files) are converted to the Human3.6M joints
    with `coco_to_h36m`; other layouts than "h36m" and "coco" are refused. The metadata dict is returned as
    stored (`layout_name`, `num_joints`, `keypoints_symmetry`)."""
    path, data = _open_npz(path, "Human3.6M 2D file")
    with data:
        raw = _pickled_dict(path, data, "positions_2d")
        metadata = _pickled_dict(path, data, "metadata")
    layout = metadata.get("layout_name", "h36m")   # VideoPose3D's ground-truth 2D file has no layout_name
    if layout not in ("h36m", "coco"):
        raise ValueError(f"{path}: metadata layout_name {layout!r} is not supported (expected 'h36m' or 'coco')")
    if metadata.get("num_joints", 17) != 17:
        raise ValueError(f"{path}: metadata num_joints is {metadata['num_joints']}, expected 17")
    out = {}
    for subject, actions in raw.items():
        if not isinstance(actions, dict):
            raise ValueError(f"{path}: positions_2d[{subject!r}] must be a dict of actions, "
                             f"got {type(actions).__name__}")
        out[subject] = {}
        for action, cameras in actions.items():
            if not isinstance(cameras, (list, tuple)) and not (isinstance(cameras, np.ndarray)
                                                               and cameras.dtype == object):
                raise ValueError(f"{path}: positions_2d[{subject!r}][{action!r}] must be a list with one array "
                                 f"per camera, got {type(cameras).__name__}")
            views = []
            for c, keypoints in enumerate(cameras):
                keypoints = _pose_array(path, f"positions_2d[{subject!r}][{action!r}][{c}]", keypoints, (17,), 2)
                if layout == "coco":
                    keypoints = coco_to_h36m(keypoints)[0]
                views.append(np.asarray(keypoints, dtype=np.float32))
            out[subject][action] = views
    return out, metadata


class H36MView(NamedTuple):
    """One Human3.6M recording seen by one camera. action: as in the file (with its take number)."""

    subject: str
    action: str
    camera_id: str
    inputs: np.ndarray    # (T, 17, 2) float32, normalised screen coordinates
    targets: np.ndarray   # (T, 17, 3) float32, camera frame, metres, joint 0 at the origin


def load_h36m(path_3d: str | os.PathLike, path_2d: str | os.PathLike | None = None, split: str = "train", *,
              distort: bool = True, fill_nan: bool = False) -> list[H36MView]:
    """Per-camera (2D input, 3D target) pairs of the subjects of `split` ("train": S1 S5 S6 S7 S8, "test": S9
    S11, "all"), in subject order, actions sorted, cameras in file order.

    Inputs: the keypoints of `path_2d` (a data_2d_h36m_*.npz), or with path_2d=None the 3D ground truth
    projected with the published cameras (`distort` as in `H36MCamera.project`; the default reproduces
    VideoPose3D's data_2d_h36m_gt.npz), normalised with the camera's resolution. When a 2D and a 3D sequence
    differ in length (some 2D files have a few extra frames) both are cropped to the shorter, as VideoPose3D does.
    NaN keypoints raise a ValueError naming the sequence, unless `fill_nan`, which fills them by temporal
    interpolation (`fill_missing`). Subjects of the split absent from the 3D file are skipped; a file with none
    of them is an error.
    """
    subjects = subjects_of(split)
    positions_3d = load_h36m_3d(path_3d)
    path_3d = os.fspath(path_3d)
    present = [s for s in subjects if s in positions_3d]
    if not present:
        raise ValueError(f"{path_3d} holds no subject of the {split!r} split ({', '.join(subjects)}); "
                         f"it has {', '.join(map(str, positions_3d)) or 'none'}")
    keypoints_2d = None
    if path_2d is not None:
        keypoints_2d, _ = load_h36m_2d(path_2d)
        path_2d = os.fspath(path_2d)
    views = []
    for subject in present:
        cameras = h36m_cameras(subject)
        for action in sorted(positions_3d[subject]):
            world = positions_3d[subject][action].astype(np.float64)
            detections = None
            if keypoints_2d is not None:
                detections = keypoints_2d.get(subject, {}).get(action)
                if detections is None:
                    raise ValueError(f"{path_2d} has no 2D keypoints for {subject} {action!r}, which {path_3d} has")
                if len(detections) != len(cameras):
                    raise ValueError(f"{path_2d}: {subject} {action!r} has {len(detections)} camera views, "
                                     f"expected {len(cameras)}")
            for c, camera in enumerate(cameras):
                in_camera = camera.world_to_camera(world)
                if detections is None:
                    pixels = camera.project(in_camera, distort=distort)
                else:
                    pixels = detections[c]
                    length = min(len(pixels), len(in_camera))
                    pixels, in_camera = pixels[:length], in_camera[:length]
                    pixels = _checked_keypoints(pixels, fill_nan, f"{path_2d}: {subject} {action!r} camera {c}")
                inputs = normalize_screen(pixels, camera.res_w, camera.res_h).astype(np.float32)
                targets = (in_camera - in_camera[:, :1]).astype(np.float32)
                views.append(H36MView(subject, action, camera.id, inputs, targets))
    return views


def _checked_keypoints(pixels: np.ndarray, fill_nan: bool, where: str) -> np.ndarray:
    if np.isfinite(pixels).all():
        return pixels
    if not fill_nan:
        bad = int((~np.isfinite(pixels).all(axis=-1)).any(axis=-1).sum())
        raise ValueError(f"{where}: {bad} frame(s) hold NaN or Inf keypoints; pass fill_nan=True to fill them "
                         "by temporal interpolation")
    try:
        return fill_missing(pixels)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err
