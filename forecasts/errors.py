"""The one error the package raises on bad input or too little data."""


class ForecastError(ValueError):
    """Input the forecasts cannot use. The message says what is wrong and how to fix it."""
