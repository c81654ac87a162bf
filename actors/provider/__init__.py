"""The provider agent: offers from presets, negotiation rules, agreement decisions."""
