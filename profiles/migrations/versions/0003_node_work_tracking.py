"""node work tracking; bad fingerprint columns cleared

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

INTEGER_COLUMNS = ('cores', 'threads', 'gpu_count')
REAL_COLUMNS = ('ram_gb', 'gpu_mem_gb', 'mem_bw_gbs', 'fp32_gflops', 'bf16_gflops')


def upgrade() -> None:
    with op.batch_alter_table('node', schema=None) as batch_op:
        batch_op.add_column(sa.Column('current_item', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=True))
        batch_op.add_column(sa.Column('last_work_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    if op.get_bind().dialect.name == 'sqlite':
        # SQLite stored whatever a join sent ("abc" as threads) before fingerprints were validated;
        # such values made every read of the node table fail. PostgreSQL never accepted them.
        for column in INTEGER_COLUMNS:
            default = "0" if column == 'gpu_count' else "NULL"
            op.execute(f"UPDATE node SET {column} = {default} WHERE typeof({column}) NOT IN ('integer', 'null')")
        for column in REAL_COLUMNS:
            op.execute(f"UPDATE node SET {column} = NULL WHERE typeof({column}) NOT IN ('integer', 'real', 'null')")
        op.execute("UPDATE node SET cpu_model = '' WHERE typeof(cpu_model) != 'text'")


def downgrade() -> None:
    with op.batch_alter_table('node', schema=None) as batch_op:
        batch_op.drop_column('last_work_at')
        batch_op.drop_column('current_item')
