"""The CPO side: DSO capacity budgets turned into OCPP 1.6 charging profiles on charge points (issue 5)."""
