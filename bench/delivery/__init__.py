"""`python -m bench.delivery bytes|memory|hints|images`: what a browser (and the edge's memory)
sees of the delivery work (issues 16 and 31): one module per measurement, `cli` for the
command line.

bytes  headless Chromium loads the shop's page through the edge with compression on, then
       with it off (`compression: {enabled: false}`), each time with an empty browser cache,
       once on a cold edge (the misses are compressed as they stream) and once warm (hits of
       the stored variants); it reports every resource's bytes on the wire
       (`transferSize`, headers included, and `encodedBodySize`) and decoded size, from the
       browser's own Resource Timing entries.
hints  headless Chromium loads a cold page (the edge learnt the page's `Link` headers on an
       earlier load, then the page was purged, so the next load is a miss) with Early Hints on
       and off; it reports when the image request started (Resource Timing `startTime`,
       milliseconds from navigation start) and when the HTML's response arrived. The origin's
       page is made slow (`--page-delay`) so there is time to win, as for a page a real
       origin renders.

memory samples the edge's resident memory every 20 ms during one cold `GET /5mo.jpg`, sliced and
       whole.

images headless Chromium (1280x800, DPR 1) loads the page with the edge's image conversion off
       and on (`images: {enabled: ...}`), cold (purged edge, origin at 300 KB/s) and warm:
       bytes on the wire per resource, times, and the PSNR of the image it received against
       the original, both scaled to the painted area (bench/delivery/images.py); the table
       goes to bench/results/delivery-images-<UTC time>.md.

Each starts its own origin and edge on loopback and stops them at the end.
"""
