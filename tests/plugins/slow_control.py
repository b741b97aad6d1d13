"""A test-only control that sleeps ``seconds`` per render (tests/test_run_lock.py: a run still going when
another starts)."""
import time

from threedb.controls import SceneControl
from threedb.controls.params import Param


class SlowControl(SceneControl):
    name = "slow_control"
    params = (Param("seconds", "float", 0.0, "sleep before the render", low=0.0, high=5.0),)

    def apply(self, scene, values):
        time.sleep(float(values.get("seconds", 0.0)))

    def undo(self, scene):
        pass
