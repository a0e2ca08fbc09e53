"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('advisorversion',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('n_profiles', sa.Integer(), nullable=False),
    sa.Column('feature_schema_version', sa.Integer(), nullable=False),
    sa.Column('learner', sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
    sa.Column('artefact_path', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('evaluation', sa.JSON(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('advisorversion', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_advisorversion_active'), ['active'], unique=False)

    op.create_table('job',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=30), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=False),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(length=4000), nullable=True),
    sa.Column('node_id', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('done', sa.Integer(), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('started_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('finished_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_job_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_job_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_job_state'), ['state'], unique=False)

    op.create_table('method',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
    sa.Column('family', sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
    sa.Column('phase', sqlmodel.sql.sqltypes.AutoString(length=30), nullable=False),
    sa.Column('paper_title', sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False),
    sa.Column('arxiv_id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
    sa.Column('catalogue_row', sa.Integer(), nullable=True),
    sa.Column('lossless', sa.Boolean(), nullable=False),
    sa.Column('config_schema', sa.JSON(), nullable=False),
    sa.Column('requirements', sa.JSON(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('method', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_method_family'), ['family'], unique=False)

    op.create_table('modelspec',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('family', sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
    sa.Column('params', sa.Integer(), nullable=False),
    sa.Column('layers', sa.Integer(), nullable=True),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('heads', sa.Integer(), nullable=True),
    sa.Column('kv_heads', sa.Integer(), nullable=True),
    sa.Column('vocab', sa.Integer(), nullable=True),
    sa.Column('context', sa.Integer(), nullable=True),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('descriptors', sa.JSON(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('modelspec', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_modelspec_family'), ['family'], unique=False)

    op.create_table('node',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('hardware_class', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('device_kind', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('cpu_model', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('cores', sa.Integer(), nullable=True),
    sa.Column('threads', sa.Integer(), nullable=True),
    sa.Column('ram_gb', sa.Float(), nullable=True),
    sa.Column('gpu_name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('gpu_count', sa.Integer(), nullable=False),
    sa.Column('gpu_mem_gb', sa.Float(), nullable=True),
    sa.Column('mem_bw_gbs', sa.Float(), nullable=True),
    sa.Column('fp32_gflops', sa.Float(), nullable=True),
    sa.Column('bf16_gflops', sa.Float(), nullable=True),
    sa.Column('fingerprint', sa.JSON(), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('price_per_hour', sa.Float(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('last_heartbeat', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('node', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_node_hardware_class'), ['hardware_class'], unique=False)
        batch_op.create_index(batch_op.f('ix_node_status'), ['status'], unique=False)

    op.create_table('workload',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
    sa.Column('batch_size', sa.Integer(), nullable=False),
    sa.Column('prompt_len', sa.Integer(), nullable=True),
    sa.Column('gen_len', sa.Integer(), nullable=True),
    sa.Column('sampling', sqlmodel.sql.sqltypes.AutoString(length=30), nullable=False),
    sa.Column('image_size', sa.Integer(), nullable=True),
    sa.Column('steps', sa.Integer(), nullable=True),
    sa.Column('guidance', sa.Float(), nullable=True),
    sa.Column('objective', sqlmodel.sql.sqltypes.AutoString(length=30), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('workload', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_workload_kind'), ['kind'], unique=False)

    op.create_table('profilerun',
    sa.Column('run_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('model_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('workload_id', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('node_id', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
    sa.Column('hardware_class', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('method_id', sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
    sa.Column('speedup', sa.Float(), nullable=True),
    sa.Column('latency_p50_s', sa.Float(), nullable=True),
    sa.Column('latency_p10_s', sa.Float(), nullable=True),
    sa.Column('latency_p90_s', sa.Float(), nullable=True),
    sa.Column('baseline_latency_p50_s', sa.Float(), nullable=True),
    sa.Column('throughput', sa.Float(), nullable=True),
    sa.Column('baseline_throughput', sa.Float(), nullable=True),
    sa.Column('peak_mem_mb', sa.Float(), nullable=True),
    sa.Column('baseline_peak_mem_mb', sa.Float(), nullable=True),
    sa.Column('quality_metric', sqlmodel.sql.sqltypes.AutoString(length=60), nullable=True),
    sa.Column('quality_baseline', sa.Float(), nullable=True),
    sa.Column('quality_value', sa.Float(), nullable=True),
    sa.Column('quality_delta', sa.Float(), nullable=True),
    sa.Column('setup_s', sa.Float(), nullable=True),
    sa.Column('repeats', sa.Integer(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('environment', sa.JSON(), nullable=False),
    sa.Column('job_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('started_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('finished_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['modelspec.id'], ),
    sa.ForeignKeyConstraint(['node_id'], ['node.id'], ),
    sa.ForeignKeyConstraint(['workload_id'], ['workload.id'], ),
    sa.PrimaryKeyConstraint('run_id')
    )
    with op.batch_alter_table('profilerun', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_profilerun_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_profilerun_hardware_class'), ['hardware_class'], unique=False)
        batch_op.create_index(batch_op.f('ix_profilerun_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_profilerun_method_id'), ['method_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_profilerun_model_id'), ['model_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_profilerun_node_id'), ['node_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_profilerun_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_profilerun_workload_id'), ['workload_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('profilerun', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_profilerun_workload_id'))
        batch_op.drop_index(batch_op.f('ix_profilerun_status'))
        batch_op.drop_index(batch_op.f('ix_profilerun_node_id'))
        batch_op.drop_index(batch_op.f('ix_profilerun_model_id'))
        batch_op.drop_index(batch_op.f('ix_profilerun_method_id'))
        batch_op.drop_index(batch_op.f('ix_profilerun_job_id'))
        batch_op.drop_index(batch_op.f('ix_profilerun_hardware_class'))
        batch_op.drop_index(batch_op.f('ix_profilerun_created_at'))

    op.drop_table('profilerun')
    with op.batch_alter_table('workload', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_workload_kind'))

    op.drop_table('workload')
    with op.batch_alter_table('node', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_node_status'))
        batch_op.drop_index(batch_op.f('ix_node_hardware_class'))

    op.drop_table('node')
    with op.batch_alter_table('modelspec', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_modelspec_family'))

    op.drop_table('modelspec')
    with op.batch_alter_table('method', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_method_family'))

    op.drop_table('method')
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_state'))
        batch_op.drop_index(batch_op.f('ix_job_kind'))
        batch_op.drop_index(batch_op.f('ix_job_created_at'))

    op.drop_table('job')
    with op.batch_alter_table('advisorversion', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_advisorversion_active'))

    op.drop_table('advisorversion')
