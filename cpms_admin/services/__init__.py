"""Services: the rules and the transactions. Each public function is one unit of work."""
