"""What the container and VM modules share: data source numbers (3:N), the records of a
virtual host's counter sample, and the books of which guests are reported and when one is
forgotten.  The modules (``modules.docker``, ``modules.kvm``) only say where the numbers
come from: the Docker Engine API and cgroups, or libvirt.
"""
