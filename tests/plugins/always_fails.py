"""A test-only control that raises for ``fail: 1`` (tests/test_run.py: failed jobs are recorded)."""
from threedb.controls import SceneControl
from threedb.controls.params import Param


class AlwaysFails(SceneControl):
    name = "always_fails"
    params = (Param("fail", "int", 0, "1 raises", low=0, high=1),)

    def apply(self, scene, values):
        if int(values.get("fail", 0)) == 1:
            raise RuntimeError("always_fails: fail=1")

    def undo(self, scene):
        pass
