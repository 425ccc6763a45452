"""What a program shows while the library works, on the stream it is given (stderr by default):
:mod:`.progress` (a live bar on a terminal, plain log lines otherwise) and :mod:`.failures` (each
failure said once, the rest summarized and listed in a file), and how a command's ``--help`` reads
(:mod:`.help`: no line broken at a hyphen, examples on one line). The CLI uses them; a script that
calls the library may pass them as its callbacks too. Imports only :mod:`stemforge.core` (and
Click and Typer, in :mod:`.help`)."""
