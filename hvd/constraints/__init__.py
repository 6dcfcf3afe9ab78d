"""Constraints on what a generation may say: grammars (JSON schemas, Lark, regex) through
llguidance, and the schemas that agents' requests ask for."""
