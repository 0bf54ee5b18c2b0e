"""The dot-command language: words (lexer), argument kinds (kinds), the one declaration of every
command (registry), and what a line means (parser)."""
