"""Sphinx configuration of the course book, built by ``make book`` (``book/build.py``).

Sphinx reads a copy of this file in ``build/book-src/``, beside copies of the notebooks, the
report and the figures laid out as in the repository.
"""

REPOSITORY = "https://github.com/cryoorient/cryoorient"

project = "cryoorient"
author = "cryoorient developers"
copyright = "cryoorient developers"
html_title = "cryoorient: a course"

extensions = ["myst_nb"]
root_doc = "index"
exclude_patterns = ["_includes/**", "_doctrees/**", "_static/**"]

# The notebooks are shown with the outputs stored in them (the run at the default profile that the
# repository commits): never executed here.
nb_execution_mode = "off"
nb_merge_streams = True  # one block per cell for what print() wrote in several pieces
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3  # GitHub-style anchors, so that README links to sections resolve

# MathJax 3 from the `book` extra (django-static-mathjax, copied to _static/mathjax by build.py)
# rather than Sphinx's default, a CDN: the book reads offline, maths included.
html_static_path = ["_static"]
mathjax_path = "mathjax/tex-mml-chtml.js"

html_theme = "sphinx_book_theme"
html_theme_options = {
    "repository_url": REPOSITORY,
    "repository_branch": "main",
    "path_to_docs": "",  # the source tree mirrors the repository: notebooks/NN_name.ipynb
    "use_repository_button": True,
    # One Colab and one Binder button on every chapter, opening that notebook from the repository
    "launch_buttons": {
        "colab_url": "https://colab.research.google.com",
        "binderhub_url": "https://mybinder.org",
        "notebook_interface": "jupyterlab",
    },
    "show_toc_level": 2,
}
