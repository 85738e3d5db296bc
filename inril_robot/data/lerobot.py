"""LeRobot dataset interop: the episode store <-> LeRobotDataset v3.0 on disk (parquet + MP4), without lerobot.

The `lerobot` package cannot be a dependency here (lerobot 0.4 pins torch < 2.11 and would replace the installed
torch), so this module writes and reads LeRobot's v3.0 layout itself, with pyarrow and PyAV:

    meta/info.json                          codebase_version v3.0, fps, features, paths (+ an "inril_robot" block)
    meta/stats.json                         min/max/mean/std/count (+ quantiles) per feature
    meta/tasks.parquet                      the task string as the (pandas) index, task_index
    meta/episodes/chunk-000/file-000.parquet  per episode: length, data/video file and index/timestamp ranges
    data/chunk-000/file-000.parquet         one row per frame
    videos/<key>/chunk-000/file-000.mp4     every episode's frames back to back (images="video", H.264)

Features written: `observation.state` (ee_pos, ee_quat xyzw, gripper_width: 8-D, base frame, SI units),
`observation.environment_state` (the task's privileged object state, when recorded), `observation.images.<camera>`
(video, or lossless PNG in the parquet with images="png"), `action` (the executed action: 7-D delta EE per step,
dx dy dz [m], rotation vector [rad], gripper 0 open .. 1 closed), `action.proposed` (before the safety envelope),
`next.reward`, `next.done`, plus LeRobot's index columns. The contract rides along in info.json, so an import of an
exported dataset restores it exactly; a LeRobot dataset from elsewhere is imported only when its features name the
same quantities (checked field by field; the first that cannot be mapped is named in the error).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inril_robot.core.contract import Contract, ObsSpec
from inril_robot.core.errors import InrilError
from inril_robot.data.store import Dataset, DatasetWriter

CODEBASE_VERSION = "v3.0"
STATE_NAMES = ["ee_x", "ee_y", "ee_z", "ee_qx", "ee_qy", "ee_qz", "ee_qw", "gripper_width"]
STATE_KEYS = {"ee_pos": 3, "ee_quat": 4, "gripper_width": 1}
ACTION_NAMES = ["dx", "dy", "dz", "rx", "ry", "rz", "gripper"]
CHUNK_FILE = "chunk-000/file-000"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
INDEX_FEATURES = {
    name: {"dtype": dtype, "shape": [1], "names": None}
    for name, dtype in (
        ("timestamp", "float32"),
        ("frame_index", "int64"),
        ("episode_index", "int64"),
        ("index", "int64"),
        ("task_index", "int64"),
    )
}


class LeRobotFormatError(ValueError, InrilError):
    """The LeRobot dataset cannot be mapped onto the contract; the message names the field."""


@dataclass
class InteropReport:
    src: str
    out: str
    episodes: int
    frames: int
    images: str
    bytes_written: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def require_pyarrow(fail: Any) -> None:
    """`fail(message)` unless pyarrow (the optional extra `lerobot`) is importable."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        fail("LeRobot datasets need pyarrow: pip install 'inril-robot[lerobot]'")


def image_feature(camera: str) -> str:
    return f"observation.images.{camera}"


# ------------------------------------------------------------------------------------------------------- export
def export_lerobot(ds: Dataset, out: Path, images: str = "video", repo_id: str | None = None) -> InteropReport:
    """Write `ds` as a LeRobot v3.0 dataset in `out` (created; must not exist or be empty)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if images not in ("video", "png"):
        raise ValueError(f"images must be 'video' or 'png', got {images!r}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise LeRobotFormatError(f"{out} is not empty: pick a new folder for the LeRobot dataset")
    contract = ds.contract
    task = str(ds.info.get("task"))
    fps = round(contract.control_hz)
    cameras = list(contract.cameras)
    env_keys = [k for k in contract.observations if k not in STATE_KEYS and not k.endswith("_rgb")]
    env_dim = sum(int(np.prod(contract.observations[k].shape)) for k in env_keys)

    columns: dict[str, list[Any]] = {}
    episodes: list[dict[str, Any]] = []
    writers: dict[str, Any] = {}
    frames_per_camera: dict[str, list[np.ndarray]] = {c: [] for c in cameras}  # for image stats
    total = 0
    try:
        for ep_i, episode in enumerate(ds.episodes):
            n = episode.length
            obs = {k: episode.load(f"obs/{k}") for k in contract.observations}
            state = np.concatenate([obs[k].reshape(n, -1) for k in STATE_KEYS], axis=1).astype(np.float32)
            rows: dict[str, Any] = {
                "observation.state": list(state),
                "action": list(episode.load("action/executed").astype(np.float32)),
                "action.proposed": list(episode.load("action/proposed").astype(np.float32)),
                "next.reward": list(episode.load("reward").astype(np.float32).reshape(n, 1)),
                "next.done": list(episode.load("done").astype(bool).reshape(n, 1)),
                "timestamp": list(np.arange(n, dtype=np.float32) / fps),
                "frame_index": list(range(n)),
                "episode_index": [ep_i] * n,
                "index": list(range(total, total + n)),
                "task_index": [0] * n,
            }
            if env_keys:
                rows["observation.environment_state"] = list(
                    np.concatenate([obs[k].reshape(n, -1) for k in env_keys], axis=1).astype(np.float32)
                )
            record: dict[str, Any] = {
                "episode_index": ep_i,
                "tasks": [task],
                "length": n,
                "data/chunk_index": 0,
                "data/file_index": 0,
                "dataset_from_index": total,
                "dataset_to_index": total + n,
            }
            for camera in cameras:
                frames = obs[f"{camera}_rgb"]
                frames_per_camera[camera].append(frames[:: max(1, n // 10)])
                key = image_feature(camera)
                if images == "png":
                    rows[key] = [{"bytes": _png(f), "path": None} for f in frames]
                    continue
                if key not in writers:
                    from inril_robot.reporting.video import VideoWriter

                    path = out / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0)
                    writers[key] = VideoWriter(path, fps=fps, crf=18)
                start = writers[key].frames / fps
                for f in frames:
                    writers[key].add(f)
                record.update(
                    {
                        f"videos/{key}/chunk_index": 0,
                        f"videos/{key}/file_index": 0,
                        f"videos/{key}/from_timestamp": start,
                        f"videos/{key}/to_timestamp": start + n / fps,
                    }
                )
            record.update(
                {
                    "meta/episodes/chunk_index": 0,
                    "meta/episodes/file_index": 0,
                    "inril_robot/success": bool(episode.success),
                }
            )
            episodes.append(record)
            for k, v in rows.items():
                columns.setdefault(k, []).extend(v)
            total += n
    finally:
        for w in writers.values():
            w.close()

    features = _features(contract, cameras, images, env_keys, env_dim, fps)
    (out / "data/chunk-000").mkdir(parents=True, exist_ok=True)
    table = pa.table({k: _arrow_column(k, v, features) for k, v in columns.items()})
    pq.write_table(table, out / DATA_PATH.format(chunk_index=0, file_index=0))
    (out / "meta/episodes/chunk-000").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(episodes), out / f"meta/episodes/{CHUNK_FILE}.parquet")
    _write_tasks(out / "meta/tasks.parquet", [task])
    stats = _stats(columns, features, frames_per_camera)
    (out / "meta/stats.json").write_text(json.dumps(stats, indent=1))
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": "franka_fr3",
        "total_episodes": len(episodes),
        "total_frames": total,
        "total_tasks": 1,
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": fps,
        "splits": {"train": f"0:{len(episodes)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if images == "video" and cameras else None,
        "features": features,
        "inril_robot": {
            "contract": contract.to_json_dict(),
            "task": task,
            "repo_id": repo_id,
            "environment_state_keys": env_keys,
            "source": str(ds.root),
        },
    }
    (out / "meta/info.json").write_text(json.dumps(info, indent=4))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return InteropReport(str(ds.root), str(out), len(episodes), total, images if cameras else "none", size)


def _features(
    contract: Contract, cameras: list[str], images: str, env_keys: list[str], env_dim: int, fps: int
) -> dict[str, Any]:
    vector = lambda n, names: {"dtype": "float32", "shape": [n], "names": names}  # noqa: E731
    features: dict[str, Any] = {"observation.state": vector(8, STATE_NAMES)}
    if env_keys:
        features["observation.environment_state"] = vector(env_dim, None)
    for camera in cameras:
        h, w = contract.cameras[camera]
        feature: dict[str, Any] = {
            "dtype": "video" if images == "video" else "image",
            "shape": [h, w, 3],
            "names": ["height", "width", "channels"],
        }
        if images == "video":
            feature["info"] = {
                "video.height": h + h % 2,
                "video.width": w + w % 2,
                "video.codec": "h264",
                "video.pix_fmt": "yuv420p",
                "video.is_depth_map": False,
                "video.fps": fps,
                "video.channels": 3,
                "has_audio": False,
            }
        features[image_feature(camera)] = feature
    features["action"] = vector(7, ACTION_NAMES)
    features["action.proposed"] = vector(7, ACTION_NAMES)
    features["next.reward"] = vector(1, None)
    features["next.done"] = {"dtype": "bool", "shape": [1], "names": None}
    return {**features, **INDEX_FEATURES}


def _arrow_column(key: str, values: list[Any], features: dict[str, Any]) -> Any:
    import pyarrow as pa

    spec = features[key]
    if spec["dtype"] == "image":
        return pa.array(values, type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    value_type = {"float32": pa.float32(), "int64": pa.int64(), "bool": pa.bool_()}[spec["dtype"]]
    flat = np.asarray(values).reshape(-1)
    if spec["shape"] == [1]:  # LeRobot stores one-element features as scalars
        return pa.array(flat, type=value_type)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, type=value_type), spec["shape"][0])


def _write_tasks(path: Path, tasks: list[str]) -> None:
    """tasks.parquet as pandas writes it: task_index, with the task strings as the index (LeRobot reads it so)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": None,
                "field_name": "__index_level_0__",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "__index_level_0__": pa.array(tasks)})
    table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    pq.write_table(table, path)


def _stats(
    columns: dict[str, list[Any]], features: dict[str, Any], frames_per_camera: dict[str, list[np.ndarray]]
) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    for key, spec in features.items():
        if spec["dtype"] in ("float32", "int64", "bool") and key in columns:
            x = np.asarray(columns[key], dtype=np.float64).reshape(len(columns[key]), -1)
            q = np.quantile(x, [0.01, 0.10, 0.50, 0.90, 0.99], axis=0)
            stats[key] = {
                "min": x.min(0).tolist(),
                "max": x.max(0).tolist(),
                "mean": x.mean(0).tolist(),
                "std": x.std(0).tolist(),
                "count": [len(x)],
                **{name: q[i].tolist() for i, name in enumerate(("q01", "q10", "q50", "q90", "q99"))},
            }
    for camera, chunks in frames_per_camera.items():
        if not chunks:
            continue
        x = np.concatenate(chunks).astype(np.float64) / 255.0  # (N, H, W, 3) in [0, 1], per channel (3, 1, 1)
        stats[image_feature(camera)] = {
            name: [[[float(v)]] for v in f(x, axis=(0, 1, 2))]
            for name, f in (("min", np.min), ("max", np.max), ("mean", np.mean), ("std", np.std))
        }
        stats[image_feature(camera)]["count"] = [len(x)]
    return stats


def _png(rgb: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


# ------------------------------------------------------------------------------------------------------- import
def import_lerobot(src: Path, out: Path, task: str | None = None) -> InteropReport:
    """Read a LeRobot v3.0 dataset into the episode store at `out` (created or appended to)."""
    import pyarrow.parquet as pq

    src = Path(src)
    info_path = src / "meta/info.json"
    if not info_path.is_file():
        raise LeRobotFormatError(f"{src} is not a LeRobot dataset (no meta/info.json)")
    info = json.loads(info_path.read_text())
    if info.get("codebase_version") != CODEBASE_VERSION:
        raise LeRobotFormatError(
            f"{src}: codebase_version {info.get('codebase_version')!r}; this reads "
            f"{CODEBASE_VERSION} (convert older datasets with lerobot's v30 conversion script)"
        )
    features = info["features"]
    contract, env_layout, stored_task = _contract_from(info)
    task = task or stored_task
    if not task:
        raise LeRobotFormatError(f"{src}: the dataset names no inril-robot task: pass --task")
    data = pq.read_table(src / DATA_PATH.format(chunk_index=0, file_index=0)).to_pydict()
    episodes = pq.read_table(src / f"meta/episodes/{CHUNK_FILE}.parquet").to_pylist()
    fps = float(info["fps"])
    cameras = list(contract.cameras)
    videos = {
        c: _decode_all(src / VIDEO_PATH.format(video_key=image_feature(c), chunk_index=0, file_index=0))
        for c in cameras
        if features[image_feature(c)]["dtype"] == "video"
    }
    frames = 0
    with DatasetWriter(out, contract, task=task, extra_info={"imported_from": f"lerobot:{src}"}) as writer:
        for ep in episodes:
            lo, hi = int(ep["dataset_from_index"]), int(ep["dataset_to_index"])
            state = np.asarray(data["observation.state"][lo:hi], dtype=np.float32)
            action = np.asarray(data["action"][lo:hi], dtype=np.float64)
            proposed = (
                np.asarray(data["action.proposed"][lo:hi], dtype=np.float64) if "action.proposed" in data else action
            )
            reward = (
                np.asarray(data["next.reward"][lo:hi], dtype=np.float32).reshape(-1)
                if "next.reward" in data
                else np.zeros(hi - lo, np.float32)
            )
            done = (
                np.asarray(data["next.done"][lo:hi], dtype=bool).reshape(-1)
                if "next.done" in data
                else np.arange(hi - lo) == hi - lo - 1
            )
            env_state = (
                np.asarray(data["observation.environment_state"][lo:hi], dtype=np.float32) if env_layout else None
            )
            images = {}
            for c in cameras:
                key = image_feature(c)
                if c in videos:
                    first = round(float(ep[f"videos/{key}/from_timestamp"]) * fps)
                    h, w = contract.cameras[c]
                    images[c] = videos[c][first : first + hi - lo, :h, :w]
                else:
                    images[c] = np.stack([_unpng(item["bytes"]) for item in data[key][lo:hi]])
                if len(images[c]) != hi - lo:
                    raise LeRobotFormatError(
                        f"{src}: {key} has {len(images[c])} frames for episode "
                        f"{ep['episode_index']}, which has {hi - lo}"
                    )
            writer_ep = writer.begin_episode(notes=f"lerobot episode {ep['episode_index']}")
            for t in range(hi - lo):
                obs = {"ee_pos": state[t, 0:3], "ee_quat": state[t, 3:7], "gripper_width": state[t, 7:8]}
                offset = 0
                for key, size in env_layout:
                    obs[key] = env_state[t, offset : offset + size].reshape(contract.observations[key].shape)
                    offset += size
                obs.update({f"{c}_rgb": images[c][t] for c in cameras})
                writer_ep.add_step(obs, proposed[t], action[t], float(reward[t]), bool(done[t]), "human")
            success = ep.get("inril_robot/success")  # ours; otherwise: a final step with reward counts
            writer_ep.commit(success=bool(reward[-1] > 0) if success is None else bool(success))
            frames += hi - lo
    return InteropReport(
        str(src), str(out), len(episodes), frames, "video" if videos else "png" if cameras else "none", 0
    )


def _contract_from(info: dict[str, Any]) -> tuple[Contract, list[tuple[str, int]], str | None]:
    """The contract of a LeRobot dataset: stored by our export, else mapped field by field (refusing with a name)."""
    features = info["features"]
    ours = info.get("inril_robot")
    if ours:
        contract = Contract.from_json_dict(ours["contract"])
        layout = [(k, int(np.prod(contract.observations[k].shape))) for k in ours.get("environment_state_keys", [])]
        return contract, layout, ours.get("task")
    for key, expected in (("observation.state", STATE_NAMES), ("action", ACTION_NAMES)):
        spec = features.get(key)
        if spec is None:
            raise LeRobotFormatError(f"field {key}: missing; the contract needs {len(expected)}-D {expected}")
        if list(spec.get("shape", [])) != [len(expected)] or (spec.get("names") and spec["names"] != expected):
            raise LeRobotFormatError(
                f"field {key}: {spec.get('shape')} {spec.get('names')} cannot be mapped onto "
                f"the contract's {len(expected)}-D {expected} (base frame, SI units)"
            )
    if "observation.environment_state" in features:
        raise LeRobotFormatError(
            "field observation.environment_state: its layout is unknown without our export's "
            "info.json block; drop it or import a dataset exported by inril-robot"
        )
    observations = {k: ObsSpec(shape=(n,), dtype="float32") for k, n in STATE_KEYS.items()}
    cams = {}
    for key, spec in features.items():
        if key.startswith("observation.images."):
            h, w, _ = spec["shape"]
            name = key.removeprefix("observation.images.")
            cams[name] = (h, w)
            observations[f"{name}_rgb"] = ObsSpec(shape=(h, w, 3), dtype="uint8")
    return Contract(control_hz=float(info["fps"]), observations=observations, cameras=cams), [], None


def _decode_all(path: Path) -> np.ndarray:
    import av

    if not path.is_file():
        raise LeRobotFormatError(f"video {path} is missing")
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _unpng(data: bytes) -> np.ndarray:
    import cv2

    return cv2.cvtColor(
        cv2.imdecode(np.frombuffer(io.BytesIO(data).getvalue(), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
    )
