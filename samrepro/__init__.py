"""samrepro: reproduces Wen-Ma-Li 2023 and Dai-Ahn-Sra 2023 with one trainer for SAM, USAM and GD."""

__version__ = "0.2.0"  # also in pyproject.toml; part of every run's fingerprint (runner.run_inputs)
