"""The dot-command language: words (lexer), the one declaration of every command (registry),
and what a line means (parser)."""
