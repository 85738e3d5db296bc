"""What a real cell perceives (issue 19): `detector train|label`, `bench markers`, `bench detector`, `markers print`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from inril_robot.cli._common import (
    CamerasOpt,
    ConfigOpt,
    JsonOpt,
    SetOpt,
    TaskOpt,
    emit_json,
    err,
    fail,
    rate_text,
    resolve,
)

detector_app = typer.Typer(help="The success detector: an image classifier that gives rewards.", no_args_is_help=True)
markers_app = typer.Typer(help="Fiducial markers on the task's objects.", no_args_is_help=True)

StepsOpt = Annotated[int, typer.Option(min=1, help="Training steps (balanced batches).")]
PrecisionOpt = Annotated[
    float,
    typer.Option(
        min=0.5, max=1.0, help="The threshold reaches this precision on the validation episodes (with margin)."
    ),
]


def _say(text: str) -> None:
    err.print(text, highlight=False)


def _print_detector(m: dict[str, Any]) -> None:
    test, eps = m["test"], m["test_episodes"]
    err.print(
        f"threshold {m['threshold']:.3f} (validation precision {m['validation']['precision']:.3f} for a target of "
        f"{m['target_precision']})\nheld-out episodes ({m['episodes']['test']}): precision {test['precision']:.3f}, "
        f"recall {test['recall']:.3f} over {test['frames']} frames; {eps['success_episodes_detected']} of "
        f"{eps['success_episodes']} successes detected, {eps['failed_episodes_with_false_success']} of "
        f"{eps['failed_episodes']} failures with a false success",
        highlight=False,
    )


@detector_app.command("train")
def detector_train(
    dataset: Annotated[Path, typer.Option("--dataset", help="Episode store with camera images.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the detector (.pt).")],
    cameras: Annotated[
        list[str] | None, typer.Option("--camera", help="Cameras it looks at (repeat); default all.")
    ] = None,
    steps: StepsOpt = 600,
    target_precision: PrecisionOpt = 0.95,
    seed: Annotated[int, typer.Option(help="Seed of the episode split and the training.")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """Train on 60% of the episodes, set the threshold on 20%, report precision/recall on the other 20%."""
    from inril_robot.data.store import Dataset
    from inril_robot.learning.policies.success import DetectorTraining, train_detector

    opts = DetectorTraining(steps=steps, target_precision=target_precision, seed=seed)
    detector = train_detector(
        Dataset(dataset), cameras, opts, progress=lambda s, loss: err.print(f"step {s}: loss {loss:.3f}")
    )
    detector.save(out, opts.encoder)
    payload = {"detector": str(out), **detector.metrics}
    emit_json(payload) if json_out else _print_detector(detector.metrics)


@detector_app.command("label")
def detector_label(
    dataset: Annotated[Path, typer.Option("--dataset", help="Episode store.")],
    episode: Annotated[int, typer.Option("--episode", min=0, help="Episode index.")],
    steps: Annotated[str, typer.Option("--steps", help="Steps to label: 3,4,5 or 10-14.")],
    success: Annotated[bool, typer.Option("--success/--failure", help="What those frames show.")] = True,
    json_out: JsonOpt = False,
) -> None:
    """The operator's labels: frames that show success (or not), overriding the labels derived from outcomes."""
    from inril_robot.data.store import Dataset
    from inril_robot.learning.policies.success import add_operator_labels

    try:
        chosen = sorted(
            {
                t
                for part in steps.split(",")
                for t in (range(int(part.split("-")[0]), int(part.split("-")[1]) + 1) if "-" in part else [int(part)])
            }
        )
    except ValueError:
        fail(f"--steps {steps!r}: give step numbers like 3,4,5 or a range like 10-14")
        return
    add_operator_labels(Dataset(dataset), episode, chosen, success)
    payload = {"dataset": str(dataset), "episode": episode, "steps": chosen, "success": success}
    emit_json(payload) if json_out else err.print(f"episode {episode}: {len(chosen)} frames labelled {success}")


def bench_markers_cmd(
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", help="A state policy trained on true poses (e.g. lift BC): arms a and b.")
    ],
    estimated_checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--estimated-checkpoint",
            help="A state policy trained on marker-estimated poses (demos collected with markers.enabled=true): arm c.",
        ),
    ] = None,
    episodes: Annotated[int, typer.Option(min=1, help="Held-out episodes per arm (same seeds).")] = 100,
    workers: Annotated[
        int, typer.Option(min=1, max=32, help="Processes running chunks of each arm's episodes (each keeps its seed).")
    ] = 1,
    arms: Annotated[
        str, typer.Option("--arms", help="Which arms to run, e.g. ab or c (per-episode results pair separate runs).")
    ] = "abc",
    config: ConfigOpt = None,
    sets: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Marker pose error against the simulator's truth (median, 95th percentile: mm, degrees; all steps and near
    the grasp) and the success of a true-pose policy on true (a) and marker (b) poses, and of an estimated-pose
    policy on marker poses (c), over the same held-out seeds. --set/--config change the marker setup (e.g. the
    cameras in markers.cameras)."""
    from inril_robot.bench.markers import marker_bench
    from inril_robot.learning.policies.checkpoint import read_checkpoint

    tasks = []
    for ckpt in (checkpoint, estimated_checkpoint):
        if ckpt is None:
            continue
        stored = read_checkpoint(ckpt)["run_config"]
        if stored["task"].get("observation", "state") != "state":
            fail(f"{ckpt} is an image policy; bench markers compares state policies")
        tasks.append(stored["task"]["name"])
    if len(set(tasks)) > 1:
        fail(f"--checkpoint is a {tasks[0]} policy and --estimated-checkpoint a {tasks[1]} policy; give one task's")
    if not arms or set(arms) - set("abc"):
        fail(f"--arms {arms!r}: give letters among a, b, c (e.g. ab, c)")
    if "c" in arms and estimated_checkpoint is None and set(arms) == {"c"}:
        fail("--arms c needs --estimated-checkpoint")
    cfg = resolve("sim", tasks[0], None, config, sets)
    result = marker_bench(
        cfg, checkpoint, episodes, say=_say, estimated_checkpoint=estimated_checkpoint, workers=workers, only=arms
    )
    if json_out:
        emit_json(result)
        return
    for key, arm in result["arms"].items():
        err.print(f"arm {key} ({arm['label']}): success {rate_text(arm['success'])}", highlight=False)
        for kind in ("fresh", "observed", "near_fresh", "near_observed"):
            e = arm.get(f"pose_error_{kind}")
            if e is None or not e["steps"]:
                continue
            err.print(
                f"  pose error ({kind}, {e['steps']} steps): position median {e['position_median_mm']:.2f} mm, p95 "
                f"{e['position_p95_mm']:.2f} mm; rotation median {e['rotation_median_deg']:.2f} deg, p95 "
                f"{e['rotation_p95_deg']:.2f} deg",
                highlight=False,
            )
        if "lost_fraction" in arm:
            err.print(f"  lost {arm['lost_fraction']:.1%} of steps", highlight=False)
    for pair, counts in result["paired"].items():
        x, y = pair.split("_vs_")
        err.print(
            f"paired {x} vs {y}: {counts['only_first']} episodes succeed only in {x}, {counts['only_second']} only "
            f"in {y}, {counts['both']} in both",
            highlight=False,
        )


def bench_detector_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for the episodes and the detector.")],
    task: TaskOpt = "lift",
    cameras: CamerasOpt = "sim_front_wrist",
    episodes: Annotated[int, typer.Option(min=10, help="Scripted episodes recorded (half cut short).")] = 200,
    steps: StepsOpt = 600,
    target_precision: PrecisionOpt = 0.95,
    json_out: JsonOpt = False,
) -> None:
    """Record scripted episodes with images in simulation (successes and failures), train a detector, report its
    precision and recall on held-out episodes (resumes the recording)."""
    from inril_robot.bench.detector import detector_bench

    cfg = resolve("sim", task, cameras, None, None)
    result = detector_bench(cfg, out, episodes, say=_say, steps=steps, target_precision=target_precision)
    emit_json(result) if json_out else _print_detector(result)


@markers_app.command("print")
def markers_print(
    out: Annotated[Path, typer.Option("--out", help="Folder for one PNG per marker.")],
    task: TaskOpt = "lift",
    dpi: Annotated[int, typer.Option(min=72, max=1200, help="Print resolution [dots per inch].")] = 300,
    json_out: JsonOpt = False,
) -> None:
    """The markers of `task`'s objects as PNGs at their physical size (ids and faces as the sim renders them)."""
    import cv2

    from inril_robot.runtime.marker_state import scene_objects
    from inril_robot.tasks import make_task
    from inril_robot.vision.markers import cells, marker_image, printed_side

    cfg = resolve("sim", task, None, None, ["markers.enabled=true"])
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for obj in scene_objects(cfg, make_task(cfg.task).scene_objects()):
        for face, m in zip(("+x", "-x", "+y", "-y", "+z"), obj.markers, strict=False):
            n = cells(m.dictionary) + 2
            px_per_cell = max(1, round(printed_side(m) / 0.0254 * dpi / n))
            path = out / f"{obj.name}_{face.replace('+', 'p').replace('-', 'm')}_id{m.marker_id}.png"
            cv2.imwrite(str(path), marker_image(m.dictionary, m.marker_id, px_per_cell))
            files.append({"object": obj.name, "face": face, "id": m.marker_id, "file": str(path)})
    payload = {"dictionary": cfg.markers.dictionary, "size_m": cfg.markers.size, "dpi": dpi, "markers": files}
    if json_out:
        emit_json(payload)
    else:
        err.print(
            f"{len(files)} markers in {out}; print at {dpi} dpi, 100% scale, then check that each black square "
            f"measures {cfg.markers.size * 1000:g} mm",
            highlight=False,
        )
