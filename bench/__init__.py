"""FACT benchmark harness (see bench/README.md).

`bench/run.py` is the entry point; `bench.suites` names the workloads and
`bench.schema` writes and checks the results JSON of DESIGN.md. The package
import is torch-free so CPU tests can load the schema and suite table.
"""
