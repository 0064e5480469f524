"""samrepro: reproduces Wen-Ma-Li 2023 and Dai-Ahn-Sra 2023 with one trainer for SAM, USAM and GD."""
