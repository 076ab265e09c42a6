"""The shop in a real browser: loads the product page, logs in with the demo account, adds a
product to the cart, places the order and waits until its page says CONFIRMED; writes a
screenshot of each step. Prints one JSON line: the order's id and state.

    python3 shop.py http://127.0.0.1:8080 SCREENSHOT_DIR [USER PASSWORD]
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cdp import Browser  # noqa: E402


def main():
    base, shots = sys.argv[1].rstrip("/"), sys.argv[2]
    user, password = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else ("alice", "wonderland")
    os.makedirs(shots, exist_ok=True)
    with Browser() as b:
        b.goto(base + "/")
        b.wait_for("document.querySelector('#product-tea')", what="the product page")
        b.screenshot(os.path.join(shots, "shop-products.png"))

        b.click("#login")
        b.wait_for("location.pathname === '/login' && document.querySelector('#name')", what="the login page")
        b.type("#name", user)
        b.type("#password", password)
        b.click("#submit")
        b.wait_for(f"location.pathname === '/' && (document.querySelector('#user') || {{}}).innerText === {json.dumps(user)}",
                   what="logged in, back on the products")

        b.click("#add-tea")
        b.wait_for("location.pathname === '/cart' && document.querySelector('#line-tea')", what="tea in the cart")
        b.screenshot(os.path.join(shots, "shop-cart.png"))

        b.click("#checkout")
        b.wait_for("location.pathname.startsWith('/orders/') && (document.querySelector('#state') || {}).innerText === 'CONFIRMED'",
                   what="the order confirmed")
        order = b.inner_text("#order-id")
        state = b.inner_text("#state")
        b.screenshot(os.path.join(shots, "shop-order.png"))
        cart = b.inner_text("#cart-link")
    print(json.dumps({"order": order, "state": state, "cart": cart}))


if __name__ == "__main__":
    main()
