"""`<experiment>_job`: the whole experiment as one Dagster run (what `assay run` does, for the UI and CI).

Dagster cannot put assets with different partitions in one asset job, and an experiment has one dynamic
partitions definition per call stage; so this job is one op that walks the stages as `assay run` does:
each segment's assets, then that call stage's calls in range runs on the same instance, then the analysis.
`dagster job execute -m definitions -j <experiment>_job` and a schedule both run it.
"""

from dagster import Failure, JobDefinition, OpExecutionContext, in_process_executor, job, op

from resources.assay import AssayResource


def experiment_driver_job(experiment: str, name: str) -> JobDefinition:
    """The driver job of one experiment."""

    @op(name=f"{name}_run_stages", description=f"Run every stage of {experiment} in dependency order.")
    def run_stages(context: OpExecutionContext, assay: AssayResource) -> None:
        from jobs.launcher import ExperimentLauncher

        launcher = ExperimentLauncher(experiment, list(assay.overrides), instance=context.instance)
        code = launcher.run()
        if code != 0:
            raise Failure(description=f"assay run {experiment} ended with exit code {code}: {launcher.last_message}")

    @job(
        name=name,
        description=f"Every stage of {experiment}, as `assay run` runs them.",
        executor_def=in_process_executor,
    )
    def _driver() -> None:
        run_stages()

    return _driver
