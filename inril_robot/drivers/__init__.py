"""Hardware drivers: implementations of `inril_robot.hardware.Robot`, `Camera` and `Teleop`.

One implementation per module. Optional hardware packages (franky, pyrealsense2, pyspacemouse) are imported only by
the module that needs them, so the core installs and runs without them. The core finds these classes through
`inril_robot.runtime.registry`, never by importing this package directly.
"""
