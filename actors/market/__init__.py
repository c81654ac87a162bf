"""The market: offers, demands, matching, negotiation and agreements."""
