"""Members: the NIR, postal addresses, the postcode base (places), field rules, the member
records themselves and how agents read them (views)."""
