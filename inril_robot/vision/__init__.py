"""Image primitives shared by drivers, runtime and calibration (numpy + OpenCV; no torch)."""
