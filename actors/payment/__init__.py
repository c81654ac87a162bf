"""Payments: the ledger of allocations, debit notes and invoices, and ERC-20 settlement on a chain."""
