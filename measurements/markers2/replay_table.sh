#!/bin/bash
# pose error of tracker variants on recorded detections (25 scripted lift episodes, seeds 2000-2024, expert noise 0.5,
# 5 cameras rendered at 640x480), each variant in its own process; each line of replay.jsonl is one variant
# record: python scripts/marker_replay.py record --out runs/m2/trace.pkl --episodes 25
T=${1:-runs/m2/trace.pkl}
OFF="--set SQUARE_PX=1e9 --set MARKER_OUTLIER_PX=1e9 --set AMBIGUITY_RATIO=-1 --set AMBIGUITY_PX=-1 --set MIN_SIDE_PX=0 --set MIN_ASPECT=0"
F2=marker_front,marker_side
run() { v=$1; shift; echo "{\"variant\": \"$v\", \"replay\": $(python3 scripts/marker_replay.py replay $T "$@")}"; }
{
run "2 fixed cameras, no checks (all markers, best candidate)" --cameras $F2 $OFF &
run "2 fixed cameras, all checks" --cameras $F2 &
run "2 fixed cameras, checks but lone squares used" --cameras $F2 --set AMBIGUITY_RATIO=-1 --set AMBIGUITY_PX=-1 &
run "2 fixed cameras, checks but no square fit test" --cameras $F2 --set SQUARE_PX=1e9 &
run "2 fixed cameras, checks but no outlier rejection" --cameras $F2 --set MARKER_OUTLIER_PX=1e9 &
run "3 fixed cameras (+ rear), all checks" --cameras $F2,marker_rear &
run "2 fixed + wrist, no checks" --cameras $F2,marker_wrist $OFF &
run "2 fixed + wrist, all checks (default)" --cameras $F2,marker_wrist &
wait
}
