"""Test seams: fault injection and probes of internal mechanisms, for swamp_ext's own test suite
(and for users who test their tooling around it). Nothing in a run calls these.

* ``crash_in_checkpoint_write(nth, exit_code=86)``: this process dies (``_exit``) half-way
  through its ``nth`` checkpoint write from now on, leaving ``checkpoint.swamp.tmp`` half-written
  and the previous ``checkpoint.swamp`` intact; ``nth=0`` disarms it.
* ``reseal_checkpoint(path)``: rewrites a checkpoint's checksum trailer for its current body, so
  that a body damaged on purpose reaches the content checks (the fuzz tests).
* ``read_checkpoint(path)`` / ``write_checkpoint(path, tensors)``: a checkpoint's named tensors,
  and a checkpoint made of given tensors (with a valid checksum).
* ``particles_forward_backward(...)``: one training-mode forward and backward of N particles of
  a zoo model, stacked or one model each, dense or on the sparse kernels, contiguous or
  channels-last (exactness tests).
* ``conv2d_forward(x, weight, stride, padding, channels_last)``: the zoo's Conv2d layer on x,
  inside a channels-last scope or not (its output's memory order shows what it computed in).
* ``lanes_probe(lanes, fail_lane=-1)``: runs the threads path's lanes and reports what each saw.
"""

from __future__ import annotations

from ._core import _C

__all__ = ["conv2d_forward", "crash_in_checkpoint_write", "lanes_probe",
           "particles_forward_backward", "read_checkpoint", "reseal_checkpoint",
           "write_checkpoint"]

crash_in_checkpoint_write = _C.testing.crash_in_checkpoint_write
particles_forward_backward = _C.testing.particles_forward_backward
lanes_probe = _C.testing.lanes_probe
conv2d_forward = _C.testing.conv2d_forward
reseal_checkpoint = _C.testing.reseal_checkpoint
read_checkpoint = _C.io.load_checkpoint_tensors
write_checkpoint = _C.io.save_checkpoint_tensors
