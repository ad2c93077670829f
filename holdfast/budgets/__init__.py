"""Budget windows, calendar and rolling: pure arithmetic both processes share."""
