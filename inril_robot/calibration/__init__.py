"""Camera calibration: intrinsics, ChArUco detection, hand-eye (arrives with the calibration issue)."""
