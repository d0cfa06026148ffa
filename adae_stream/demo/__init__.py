"""The demo: offline digits data, attacks and corruptions, a traffic generator, a live view and a report."""
