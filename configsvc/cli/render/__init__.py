"""Human output of ``holdfastctl``: pure functions of the API's JSON."""
