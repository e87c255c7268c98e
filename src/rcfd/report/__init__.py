"""Reading runs back: tables, figures and the HTML report."""
