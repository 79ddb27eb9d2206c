"""The evaluation loop's domain core: gold sets, hard checks, LLM judges, prompt versions, model comparison,
canary drift and perspectives -> synthesis.

Everything here is a pure function of records in and records out; the Dagster side (judge and synthesis call
stages, the canary schedule, asset checks) wires these modules in and never the other way round.
"""
