"""The service layer: plain typed functions over the stores; no Flask here."""
