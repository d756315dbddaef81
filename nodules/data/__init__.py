"""Datasets (multi-resolution TFRecords), synthetic CT phantoms, and patches cut from CT scans."""
