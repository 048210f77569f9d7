"""Placeholder for the main demo; replaced by the real experiment runner."""


def main() -> None:
    print("demo not yet written")


if __name__ == "__main__":
    main()
