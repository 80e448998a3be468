"""gridcap: a DSO capacity service that hands out cable budgets to charge point operators."""
