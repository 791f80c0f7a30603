"""`python -m zeropoint.evals.bias > listing.tsv`: every sentence of the pack, one per line, with lint findings
(the listing the review in README.md read)."""
from . import review_listing

print(review_listing(), end="")
