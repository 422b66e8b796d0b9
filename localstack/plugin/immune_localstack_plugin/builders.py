"""LocalStack plays immune's bake builders.

LocalStack runs no user data, so an instance never powers itself off the way immune's
bake wrapper does once the provision script succeeded (see src/bake.rs). Here an
instance launched with that wrapper as its user data stops itself a moment after it
starts (IMMUNE_BUILDER_SECONDS, default 1), and GetConsoleOutput shows what the wrapper
would have printed.

A test (or a demo) picks how the provision script goes by tagging the *source image*
`immune-localstack:provision`:

- `succeeds` (or no tag): the builder stops itself;
- `hangs`: it keeps running, as a script that never ends;
- `fails`: it keeps running and its console ends with the wrapper's failure line.
"""

import os
import threading

from localstack.runtime import hooks

WRAPPER = "# Written by immune. Runs the provision script below"
KNOB = "immune-localstack:provision"


def console_of(outcome: str) -> str:
    lines = [
        "Linux version 6.1.0-immune (localstack) #1 SMP",
        "cloud-init: running user data",
        "immune-bake: provision started",
    ]
    if outcome == "fails":
        lines += [
            "E: Unable to locate package nginx",
            "immune-bake: provision failed with exit status 100",
        ]
    elif outcome == "hangs":
        lines += ["waiting for the package mirror..."]
    else:
        lines += ["immune-bake: provision succeeded; powering off"]
    return "\n".join(lines) + "\n"


@hooks.on_infra_start()
def immune_play_builders() -> None:
    from moto.core.types import Base64EncodedString
    from moto.core.utils import utcnow
    from moto.ec2.models.instances import InstanceBackend
    from moto.ec2.responses.general import General
    from moto.core.responses import ActionResult

    delay = float(os.environ.get("IMMUNE_BUILDER_SECONDS", "1"))
    original_run_instances = InstanceBackend.run_instances

    def power_off(instance) -> None:
        # Terminated (or stopped) meanwhile: nothing to do.
        if instance.state == "running":
            instance.stop()

    def run_instances(self, image_id, count, user_data, security_group_names, **kwargs):
        reservation = original_run_instances(
            self, image_id, count, user_data, security_group_names, **kwargs
        )
        try:
            script = user_data.decode() if user_data is not None else ""
        except Exception:
            script = ""
        if WRAPPER not in script:
            return reservation
        outcome = self.tags.get(image_id, {}).get(KNOB, "succeeds")
        for instance in reservation.instances:
            instance.__dict__["_immune_console"] = console_of(outcome)
            if outcome == "succeeds":
                timer = threading.Timer(delay, power_off, [instance])
                timer.daemon = True
                timer.start()
        return reservation

    InstanceBackend.run_instances = run_instances

    original_console = General.get_console_output

    def get_console_output(self) -> ActionResult:
        instance = self.ec2_backend.get_instance(self._get_param("InstanceId"))
        console = instance.__dict__.get("_immune_console")
        if console is None:
            return original_console(self)
        return ActionResult(
            {
                "InstanceId": instance.id,
                "Timestamp": utcnow(),
                "Output": Base64EncodedString.from_raw_string(console),
            }
        )

    General.get_console_output = get_console_output
