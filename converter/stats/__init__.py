"""Statistics, plots and previews of a dataset: what `stats/` in an output folder holds.

`records` is the view of one written record every part shares; `facts` reduces a record to
the numbers statistics need; `statistics` accumulates them per split and class in bounded
memory; `pictures` and `page` draw the plots, previews and the self-contained index.html.
"""
