from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="gbufferevent",
    version="0.1.0",
    description="libevent's bufferevents on gevent: pairs, filters, rate limits, TLS",
    long_description=long_description,
    long_description_content_type="text/markdown",
    packages=find_packages(include=["gbufferevent", "gbufferevent.*"]),
    package_data={"gbufferevent": ["py.typed"]},
    python_requires=">=3.9",
    install_requires=[
        "gevent>=22.10",
        "greenlet>=2.0",
        "pyOpenSSL>=23.0",
        "cryptography>=41",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-timeout>=2.1", "gunicorn>=21", "mypy>=1.10"],
        "bench": ["trio>=0.22", "psutil>=5"],
    },
    entry_points={"console_scripts": ["gbufferevent=gbufferevent.cli:main"]},
    license="BSD-3-Clause",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: System :: Networking",
    ],
)
